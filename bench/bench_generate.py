"""In-process generation (latents + ONNX decode, no encoding): images/s by batch size, against batch 1."""

from __future__ import annotations

import argparse
import time

import numpy as np

from service.engine.registry import ModelRegistry
from service.settings import get_settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=1024)
    args = parser.parse_args()
    settings = get_settings()
    model = ModelRegistry.from_directory(settings.models_dir, settings.default_model).default
    model.generate(0, np.arange(64))  # warm-up
    rows = []
    for batch in (1, 8, 64, 256):
        started = time.perf_counter()
        for start in range(0, args.count, batch):
            model.generate(0, np.arange(start, min(args.count, start + batch)))
        rows.append((batch, args.count / (time.perf_counter() - started)))
    print(f"{model.package.ref} on {model.provider}: {args.count} images per row")
    print(f"{'batch':>6s} {'images/s':>10s} {'vs batch 1':>11s}")
    for batch, rate in rows:
        print(f"{batch:6d} {rate:10.0f} {rate / rows[0][1]:10.2f}x")


if __name__ == "__main__":
    main()
