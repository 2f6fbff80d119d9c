"""The exported decoder on onnxruntime against torch eager and torch.compile, on the same checkpoint.

Every row is the decoder with its uint8 NHWC post-processing, timed in one run; ratios are against
torch eager at the same batch size. On a machine with CUDA (and onnxruntime-gpu), the CUDA rows run too.

    python bench/bench_export.py                     # the shipped model's architecture, freshly exported
    python bench/bench_export.py --checkpoint runs/default/checkpoint.pt --package models/avatars-64

Without a checkpoint the decoder is rebuilt from the package's config with random weights and exported
to a temporary folder: timings do not depend on the weights' values. The inputs are a job's: latents of
the package's prior and, for a conditional model, the one-hot attributes drawn from its training
marginals (``Crowd``), fed as ``z`` and ``y``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch

from aae.model import AAE, AAEConfig, load_checkpoint
from export.graphs import DecoderImageHead, convert_fp16, decoder_inputs, export_graph
from synthgen.core.attributes import AttributeSpace
from synthgen.core.crowd import Crowd


def best_time(fn: Callable[[], object], repeats: int, min_seconds: float = 0.2) -> float:
    """Best seconds per call over `repeats` rounds, each long enough to be measured."""
    fn()
    fn()
    best = float("inf")
    for _ in range(repeats):
        calls, started = 0, time.perf_counter()
        while True:
            fn()
            calls += 1
            elapsed = time.perf_counter() - started
            if elapsed >= min_seconds:
                break
        best = min(best, elapsed / calls)
    return best


def job_feeds(prior: dict[str, Any], space: AttributeSpace, latent_dim: int, batch: int) -> dict[str, np.ndarray]:
    """The decoder's inputs for images 0 .. batch - 1 of seed 0: ``z``, and ``y`` for a conditional model."""
    indices, crowd = np.arange(batch), Crowd()
    feeds = {"z": crowd.latents(prior, 0, indices, latent_dim, None)}
    if space:
        feeds["y"] = space.one_hot(crowd.codes(space, 0, batch, indices))
    return feeds


def ort_runner(path: Path, provider: str, feeds: dict[str, np.ndarray]) -> Callable[[], object]:
    session = ort.InferenceSession(str(path), providers=[provider])
    return lambda: session.run(None, feeds)


def torch_runner(head: torch.nn.Module, inputs: dict[str, torch.Tensor], device: str) -> Callable[[], object]:
    def run() -> object:
        with torch.inference_mode():
            out = head(**inputs)
            return out.cpu() if device == "cuda" else out

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=None, help="a training checkpoint (default: random weights)")
    parser.add_argument("--package", default="models/avatars-64")
    parser.add_argument("--batches", default="1,64,256")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile (it needs a C++ compiler)")
    args = parser.parse_args()
    package = Path(args.package)
    prior = json.loads((package / "manifest.json").read_text())["prior"]
    if args.checkpoint:
        model, _ = load_checkpoint(args.checkpoint)
    else:
        config = AAEConfig.from_dict(json.loads((package / "manifest.json").read_text())["config"])
        torch.manual_seed(0)
        model = AAE(config).eval()
        package = Path(tempfile.mkdtemp(prefix="bench-export-"))
        export_graph(DecoderImageHead(model), decoder_inputs(model), "images", package / "decoder.onnx")
        convert_fp16(package / "decoder.onnx", package / "decoder.fp16.onnx")
    head = DecoderImageHead(model).eval()
    latent_dim, space = model.config.latent_dim, model.config.attribute_space
    compiled = None if args.no_compile else torch.compile(head)
    cuda = torch.cuda.is_available() and "CUDAExecutionProvider" in ort.get_available_providers()
    print(f"torch {torch.__version__} ({torch.get_num_threads()} threads), onnxruntime {ort.__version__}, CUDA: {cuda}")
    print(f"{'batch':>5s}  {'runtime':34s} {'ms/batch':>9s} {'images/s':>9s} {'vs torch eager':>15s}")
    for batch in (int(b) for b in args.batches.split(",")):
        feeds = job_feeds(prior, space, latent_dim, batch)
        tensors = {name: torch.from_numpy(value) for name, value in feeds.items()}
        rows: list[tuple[str, float]] = [("torch eager (CPU)", best_time(torch_runner(head, tensors, "cpu"), args.repeats))]
        if compiled is not None:
            rows.append(("torch.compile (CPU)", best_time(torch_runner(compiled, tensors, "cpu"), args.repeats)))
        rows.append(
            ("onnxruntime CPU fp32", best_time(ort_runner(package / "decoder.onnx", "CPUExecutionProvider", feeds), args.repeats))
        )
        if cuda:
            gpu_head = head.to("cuda")
            on_gpu = {name: value.to("cuda") for name, value in tensors.items()}
            rows.append(("torch eager (CUDA)", best_time(torch_runner(gpu_head, on_gpu, "cuda"), args.repeats)))
            rows.append(
                (
                    "onnxruntime CUDA fp32",
                    best_time(ort_runner(package / "decoder.onnx", "CUDAExecutionProvider", feeds), args.repeats),
                )
            )
            rows.append(
                (
                    "onnxruntime CUDA fp16",
                    best_time(ort_runner(package / "decoder.fp16.onnx", "CUDAExecutionProvider", feeds), args.repeats),
                )
            )
            head.to("cpu")
        base = rows[0][1]
        for label, seconds in rows:
            print(f"{batch:5d}  {label:34s} {seconds * 1000:9.2f} {batch / seconds:9.0f} {base / seconds:14.2f}x")


if __name__ == "__main__":
    main()
