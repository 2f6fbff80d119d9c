"""An independent check of a package's sample quality: the sliced Wasserstein distance of Karras et al. (2018,
"Progressive Growing of GANs", section 5 and its reference ``sliced_wasserstein.py``), written here from the
paper's protocol and sharing no code with the card's metric (``aae/metrics.py``).

Real images are fresh renders of an avatar dataset seed that no training run, card or classifier uses
(``--real-seed``, default 9001); the floor is those renders against renders of a second unused seed
(``--floor-seed``). Samples are the package's own: decoded by onnxruntime from the contract's latents, the
same inputs the card scores (seed 0, image i of a job with seed 0).

Protocol: a Laplacian pyramid down to 16 px (cv2's pyrDown/pyrUp 5x5 binomial filter, mirrored edges); at each
level 128 random 7x7x3 neighbourhoods per image; each set's descriptors normalized per channel by that set's
own mean and standard deviation; 4 repeats of 128 random unit directions; the mean absolute difference of
the sorted projections, x10^3. Reported per level (64, 32, 16 px) and averaged, with each ratio to the floor.

    python -m bench.independent_swd models/avatars-64 --out bench/results/independent-swd.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

NEIGHBOURHOOD = 7
PER_IMAGE = 128
REPEATS = 4
DIRECTIONS = 128
MIN_SIZE = 16
UNUSED_SEEDS = (9001, 9002)  # dataset seeds that nothing in synthgen trains or evaluates on

_BINOMIAL = np.outer([1, 4, 6, 4, 1], [1, 4, 6, 4, 1]).astype(np.float32) / 256.0


def _pyr_down(x: np.ndarray) -> np.ndarray:
    return ndimage.convolve(x, _BINOMIAL[None, None], mode="mirror")[:, :, ::2, ::2]


def _pyr_up(x: np.ndarray) -> np.ndarray:
    n, c, h, w = x.shape
    up = np.zeros((n, c, 2 * h, 2 * w), dtype=x.dtype)
    up[:, :, ::2, ::2] = x
    return ndimage.convolve(up, _BINOMIAL[None, None] * 4.0, mode="mirror")


def pyramid(images_nchw: np.ndarray) -> list[np.ndarray]:
    """Laplacian pyramid of float32 images [N, C, H, W], finest level first, the last the low-pass residual."""
    levels = [images_nchw.astype(np.float32)]
    while levels[-1].shape[-1] > MIN_SIZE:
        levels.append(_pyr_down(levels[-1]))
        levels[-2] = levels[-2] - _pyr_up(levels[-1])
    return levels


def neighbourhoods(level: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """PER_IMAGE random 7x7 neighbourhoods of each image of one level -> [N * PER_IMAGE, C, 7, 7]."""
    n, c, h, w = level.shape
    half = NEIGHBOURHOOD // 2
    count = n * PER_IMAGE
    image = (np.arange(count) // PER_IMAGE)[:, None, None, None]
    channel = np.arange(c)[None, :, None, None]
    dy = np.arange(-half, half + 1)[None, None, :, None]
    dx = np.arange(-half, half + 1)[None, None, None, :]
    y = rng.integers(half, h - half, size=(count, 1, 1, 1)) + dy
    x = rng.integers(half, w - half, size=(count, 1, 1, 1)) + dx
    return level[image, channel, y, x]


def _normalized(descriptors: np.ndarray) -> np.ndarray:
    d = descriptors - descriptors.mean(axis=(0, 2, 3), keepdims=True)
    d = d / d.std(axis=(0, 2, 3), keepdims=True)
    return d.reshape(len(d), -1)


def _distance(a: np.ndarray, b: np.ndarray, rng: np.random.Generator) -> float:
    results = []
    for _ in range(REPEATS):
        directions = rng.standard_normal((a.shape[1], DIRECTIONS)).astype(np.float32)
        directions /= np.sqrt((directions**2).sum(axis=0, keepdims=True))
        pa, pb = np.sort(a @ directions, axis=0), np.sort(b @ directions, axis=0)
        results.append(float(np.abs(pa - pb).mean()))
    return float(np.mean(results))


def swd(a_nhwc: np.ndarray, b_nhwc: np.ndarray, seed: int = 0) -> list[float]:
    """SWD x10^3 between two equal-sized sets of uint8 images [N, H, W, C], per level and then their mean."""
    if a_nhwc.shape != b_nhwc.shape:
        raise ValueError(f"the two sets must have one shape, got {a_nhwc.shape} and {b_nhwc.shape}")
    rng = np.random.default_rng(seed)
    per_level = []
    for la, lb in zip(pyramid(a_nhwc.transpose(0, 3, 1, 2)), pyramid(b_nhwc.transpose(0, 3, 1, 2)), strict=True):
        da, db = _normalized(neighbourhoods(la, rng)), _normalized(neighbourhoods(lb, rng))
        per_level.append(1e3 * _distance(da, db, rng))
    return [*per_level, float(np.mean(per_level))]


def real_renders(count: int, seed: int, size: int, cache_dir: str) -> np.ndarray:
    from aae.data import avatar_faces

    return avatar_faces(count, seed=seed, size=size, cache_dir=cache_dir, progress=False)


def package_samples(package: str, count: int, seed: int = 0) -> np.ndarray:
    """The package's samples 0..count-1 of seed ``seed``: what a job with that seed returns."""
    from aae.generators import PackageGenerator

    generator = PackageGenerator(package)
    return generator.decode(generator.sample_inputs(count, seed))


def check(package: str, count: int, real_seed: int, floor_seed: int, cache_dir: str) -> dict[str, Any]:
    samples = package_samples(package, count)
    size = samples.shape[1]
    real, other = real_renders(count, real_seed, size, cache_dir), real_renders(count, floor_seed, size, cache_dir)
    levels = [f"{size >> i}px" for i in range(len(pyramid(real[:1].transpose(0, 3, 1, 2))))] + ["average"]
    sample = dict(zip(levels, swd(samples, real, seed=1), strict=True))
    floor = dict(zip(levels, swd(other, real, seed=1), strict=True))
    return {
        "protocol": "Karras et al. 2018 SWD: Laplacian levels to 16 px, 128 7x7 neighbourhoods per image and level, "
        "per-set normalization, 4 x 128 directions, x10^3",
        "package": package,
        "images": count,
        "real": {"data": "avatars", "seed": real_seed},
        "floor": {"data": "avatars", "seed": floor_seed},
        "samples": {level: round(v, 2) for level, v in sample.items()},
        "floor_swd": {level: round(v, 2) for level, v in floor.items()},
        "ratio": {level: round(sample[level] / floor[level], 2) for level in levels},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("package", help="a model package folder")
    parser.add_argument("--count", type=int, default=1000, help="samples, and renders in each real set")
    parser.add_argument("--real-seed", type=int, default=UNUSED_SEEDS[0])
    parser.add_argument("--floor-seed", type=int, default=UNUSED_SEEDS[1])
    parser.add_argument("--cache-dir", default="cache")
    parser.add_argument("--out", default=None, help="also write the result as JSON here")
    args = parser.parse_args(argv)
    result = check(args.package, args.count, args.real_seed, args.floor_seed, args.cache_dir)
    text = json.dumps(result, indent=2)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    print(text)
    for level, ratio in result["ratio"].items():
        print(f"{level}: samples {result['samples'][level]:.1f} / floor {result['floor_swd'][level]:.1f} = {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
