"""The benchmarks on a conditional model: every in-process decode they time takes the engine's decode rows
([z | y], ``LoadedModel.inputs``) or, for the bare graph, ``z`` and ``y``; a short run of each through a
real service (api, worker, Redis) on the tiny conditional package."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.settings import get_settings
from tests.support.conditional_model import ConditionalModel
from tests.support.live import LiveService

pytest.importorskip("torch")

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def conditional_default(tiny_conditional: ConditionalModel, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """The tiny conditional package as the settings' default model, here and in the processes started."""
    env = {"SYNTHGEN_MODELS_DIR": str(tiny_conditional.models_dir), "SYNTHGEN_DEFAULT_MODEL": tiny_conditional.name}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    yield env
    get_settings.cache_clear()


def _run_in_a_bench_process(code: str, env: dict[str, str], timeout: int) -> None:
    """Run ``code`` with the bench modules importable, in its own process (tests do not import bench/)."""
    full = {**os.environ, **env, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=full, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]


IN_PROCESS = """
from bench import bench_engine, bench_serving
model = bench_serving.load_model(ort_threads=1, provider="cpu")
assert model.attributes and model.row_dim > model.package.latent_dim
assert bench_serving.bulk_baseline(model, 24, 8) > 0
assert bench_serving.bulk_baseline(bench_serving.load_instances(ort_threads=2, provider="cpu"), 24, 8) > 0
assert bench_serving.batch1_baseline(model, 4) > 0
assert bench_engine.ceiling(24, "png", ort_threads=1, encode_threads=2, batch=8) > 0
"""

AGAINST_A_SERVICE = """
import sys
from bench import bench_engine, bench_serving
base = sys.argv[1]
assert bench_serving.bulk_jobs(base, 16, 8, 2) > 0
assert bench_serving.one_job(base, 8) > 0
rate, latencies = bench_serving.interactive(base, 2, 2)
assert rate > 0 and len(latencies) == 4 and min(latencies) > 0
assert bench_engine.run_job(base, 8)[1] > 0
lone, floor, direct = bench_engine.lone_job_latency(base, repeats=2)
assert lone > 0 and floor > 0 and direct > 0
"""


@pytest.mark.timeout(240)
def test_the_in_process_baselines_decode_conditional_rows(conditional_default: dict[str, str]) -> None:
    _run_in_a_bench_process(IN_PROCESS, conditional_default, 200)


@pytest.mark.timeout(240)
def test_the_service_measurements_run_on_a_conditional_model(conditional_default: dict[str, str]) -> None:
    service = LiveService({**conditional_default, "SYNTHGEN_CHUNK_SIZE": "8"}, workers=1)
    try:
        service.wait_workers()
        code = AGAINST_A_SERVICE.replace("sys.argv[1]", repr(service.base_url))
        _run_in_a_bench_process(code, conditional_default, 200)
    finally:
        service.close()


@pytest.mark.timeout(180)
def test_the_export_benchmark_feeds_z_and_y(tiny_conditional: ConditionalModel) -> None:
    args = ["--checkpoint", str(tiny_conditional.checkpoint), "--package", str(tiny_conditional.package)]
    command = [sys.executable, str(REPO / "bench" / "bench_export.py"), *args, "--batches", "2", "--repeats", "1", "--no-compile"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=150)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [re.match(r"\s+2  (.+?)\s{2,}\S+\s+(\d+)\s", line) for line in proc.stdout.splitlines()]
    table = {row[1]: int(row[2]) for row in rows if row}  # runtime -> images/s at batch 2
    assert set(table) == {"torch eager (CPU)", "onnxruntime CPU fp32"} and min(table.values()) > 0, proc.stdout


def test_checkpoint_control_judges_a_checkpoint_as_its_exported_package_is_judged(
    tiny_conditional: ConditionalModel, tmp_path: Path
) -> None:
    from aae.control import ControlSizes, adherence, package_generator
    from tests.support.labeled_package import add_classifier

    judge = tmp_path / "judge"
    add_classifier(tiny_conditional.package, judge)
    out = tmp_path / "control.json"
    args = [str(tiny_conditional.checkpoint), "--judge", str(judge), "--per-value", "4", "--out", str(out)]
    command = [sys.executable, "-m", "bench.checkpoint_control", *args]
    proc = subprocess.run(
        command, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=150
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (result,) = json.loads(out.read_text())
    exported, _ = package_generator(judge)
    names = list(exported.space.identity)
    # the checkpoint's decoder rounds as the exported graph does: the same images, the same verdicts
    assert result["adherence"] == adherence(exported, ControlSizes(per_value=4), names)
