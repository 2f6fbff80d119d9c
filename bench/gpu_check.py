"""The serving path end to end on one execution provider, for ``bench/gpu_check.sh``.

A job goes through Redis and a worker process (``SYNTHGEN_EXECUTION_PROVIDER``, IO binding on: on CUDA
the fp16 graph with preallocated device buffers), and single images go over the interactive channel to
the same worker. Their bytes are compared with an in-process decode on the same provider and graph,
and with the fp32 CPU decode (the export's parity bound: 1 grey level for fp32, 8 for fp16). The model is
the settings' default (``SYNTHGEN_MODELS_DIR``, ``SYNTHGEN_DEFAULT_MODEL``), conditional or not: the
in-process decodes take the same rows as the job (``LoadedModel.inputs``). Writes ``serving.json``; exits 1
when a check fails.

    python bench/gpu_check.py --provider cuda --count 4096 --out DIR
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tarfile
import time
from pathlib import Path

import httpx
import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from service.engine.registry import ModelRegistry
from service.engine.sessions import decoder_for, pick_providers
from service.settings import get_settings
from tests.support.jobs import finished, wait_job
from tests.support.live import LiveService

PARITY = {"fp32": 1, "fp16": 8}  # grey levels, as the exporter checks them


def _npy_members(data: bytes) -> np.ndarray:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        names = sorted(m for m in tar.getnames() if m.endswith(".npy"))
        return np.stack([np.load(io.BytesIO(tar.extractfile(n).read())) for n in names])  # type: ignore[union-attr]


def check(provider: str, count: int, out: Path) -> dict[str, object]:
    settings = get_settings()
    reference = ModelRegistry.from_directory(settings.models_dir, settings.default_model, provider).default
    cpu = ModelRegistry.from_directory(settings.models_dir, settings.default_model, "cpu").default
    graph = "fp16" if decoder_for(reference.package, pick_providers(provider)) != reference.package.decoder_path else "fp32"
    env = {"SYNTHGEN_EXECUTION_PROVIDER": provider, "SYNTHGEN_IO_BINDING": "on", "SYNTHGEN_INTERACTIVE_DECODE": "workers"}
    service = LiveService(env, workers=1, log_dir=out / "serving-logs")
    try:
        service.wait_workers()
        with httpx.Client(base_url=service.base_url, timeout=120) as http:
            started = time.perf_counter()
            job = http.post("/v1/jobs", json={"count": count, "seed": 7, "format": "npy", "priority": "bulk"}).json()
            final = wait_job(http, job["id"], finished, timeout_s=240)
            data = http.get(f"/v1/jobs/{job['id']}/result").content
            seconds = time.perf_counter() - started
            single = np.stack([np.load(io.BytesIO(http.get(f"/v1/images/7.npy?index={i}").content)) for i in range(8)])
    finally:
        service.close()
    images = _npy_members(data)
    runner = reference.runner("on")
    rows = reference.inputs(7, np.arange(count))  # z, or [z | y] for a conditional model: what the job decoded
    same = np.concatenate([runner(rows[s : s + 256]) for s in range(0, count, 256)])
    fp32 = cpu.decode(rows)
    vs_same = int(np.abs(images.astype(int) - same.astype(int)).max())
    vs_cpu = int(np.abs(images.astype(int) - fp32.astype(int)).max())
    report = {
        "model": reference.package.ref,
        "conditional": bool(reference.attributes),
        "provider_asked": provider,
        "provider_used": reference.provider,
        "graph": graph,
        "io_binding": True,
        "job_status": final["status"],
        "images": len(images),
        "images_per_s_post_to_last_byte": round(count / seconds, 1),
        "max_diff_vs_in_process_same_provider": vs_same,
        "max_diff_vs_cpu_fp32": vs_cpu,
        "interactive_equal_to_job": bool(np.array_equal(single, images[:8])),
        "parity_bound": PARITY[graph],
    }
    report["ok"] = bool(
        final["status"] == "succeeded"
        and len(images) == count
        and vs_same <= (0 if reference.provider == "CPUExecutionProvider" else 1)
        and vs_cpu <= PARITY[graph]
        and report["interactive_equal_to_job"]
    )
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--provider", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--count", type=int, default=1024)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    report = check(args.provider, args.count, args.out)
    (args.out / "serving.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
