"""Encoders and PNG levels on real decoder output: images/s, mean bytes, ratios against PNG level 6."""

from __future__ import annotations

import argparse
import time

import numpy as np

from service.engine.registry import ModelRegistry
from service.settings import get_settings
from synthgen.core.images import encode_image

CASES = [
    ("png level 6 (Pillow default)", "png", {"png_compress_level": 6}),
    ("png level 0", "png", {"png_compress_level": 0}),
    ("png level 1 (synthgen default)", "png", {"png_compress_level": 1}),
    ("png level 9", "png", {"png_compress_level": 9}),
    ("jpeg q90", "jpeg", {"quality": 90}),
    ("webp q90", "webp", {"quality": 90}),
    ("npy", "npy", {}),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    settings = get_settings()
    model = ModelRegistry.from_directory(settings.models_dir, settings.default_model).default
    images = model.generate(0, np.arange(args.count))
    rows = []
    for label, fmt, kwargs in CASES:
        best = float("inf")
        for _ in range(args.repeats):
            started = time.perf_counter()
            sizes = [len(encode_image(image, fmt, **kwargs)) for image in images]
            best = min(best, time.perf_counter() - started)
        rows.append((label, args.count / best, float(np.mean(sizes))))
    base_rate, base_bytes = rows[0][1], rows[0][2]
    print(f"{model.package.ref}: {args.count} images {images.shape[1]}x{images.shape[2]}, best of {args.repeats}, one thread")
    print(f"{'encoder':32s} {'images/s':>10s} {'speed vs png6':>14s} {'mean bytes':>11s} {'size vs png6':>13s}")
    for label, rate, size in rows:
        print(f"{label:32s} {rate:10.0f} {rate / base_rate:13.2f}x {size:11.0f} {size / base_bytes:12.2f}x")


if __name__ == "__main__":
    main()
