"""Sample-quality metrics that need no pretrained network (none can be downloaded here).

All functions take uint8 images [N, H, W, C] or latents [N, D] as numpy arrays.

- ``sliced_wasserstein``: SWD on Laplacian-pyramid patches, as in Karras et al. (2018), "Progressive
  Growing of GANs": 7x7 patches, 128 per image per level, channel-normalized, 4 repeats x 128 random
  directions, reported x10^3 per level and on average.
- ``mmd2_unbiased`` and ``prior_fit``: how well encoded images match the prior (MMD^2 with a Gaussian
  kernel and a permutation-test p-value, plus a per-dimension Kolmogorov-Smirnov statistic).
- ``data_copying``: the Meehan et al. (2020) test: generated-to-train nearest-neighbour distances
  against held-out-to-train ones; a strongly negative z means the model copies its training set.
- ``near_duplicate_rate``: the fraction of samples with a neighbour closer than the uniqueness threshold.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from service.uniqueness import nearest_neighbour_distances, nearest_rms, thumbnails

_BINOMIAL = np.array([1, 4, 6, 4, 1], dtype=np.float64) / 16.0


def _blur(x: np.ndarray) -> np.ndarray:
    """Separable 5-tap binomial blur of [N, H, W, C] float images, reflecting at the borders."""
    padded = np.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)), mode="reflect")
    H, W = x.shape[1:3]  # height, width
    rows = sum(w * padded[:, i : i + H, :, :] for i, w in enumerate(_BINOMIAL))
    return sum(w * rows[:, :, i : i + W, :] for i, w in enumerate(_BINOMIAL))


def laplacian_pyramid(images: np.ndarray, min_size: int = 16) -> list[np.ndarray]:
    """Levels from finest to coarsest; the last is the coarsest Gaussian level itself."""
    current = images.astype(np.float64) / 127.5 - 1.0
    levels = []
    while current.shape[1] > min_size:
        down = _blur(current)[:, ::2, ::2, :]
        up = np.repeat(np.repeat(down, 2, axis=1), 2, axis=2)
        levels.append(current - _blur(up))
        current = down
    levels.append(current)
    return levels


def _descriptors(level: np.ndarray, per_image: int, size: int, rng: np.random.Generator) -> np.ndarray:
    N, H, W = level.shape[:3]  # count, height, width
    ys = rng.integers(0, H - size + 1, N * per_image)
    xs = rng.integers(0, W - size + 1, N * per_image)
    owner = np.repeat(np.arange(N), per_image)
    grid = np.arange(size)
    rows = ys[:, None, None] + grid[None, :, None]  # [P, size, 1]
    cols = xs[:, None, None] + grid[None, None, :]  # [P, 1, size]
    return level[owner[:, None, None], rows, cols]  # [P, size, size, C]


def _normalize(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Channel-normalize both descriptor sets with the statistics of their union."""
    both = np.concatenate([a, b])
    mean = both.mean(axis=(0, 1, 2), keepdims=True)
    std = both.std(axis=(0, 1, 2), keepdims=True) + 1e-8
    return ((a - mean) / std).reshape(len(a), -1), ((b - mean) / std).reshape(len(b), -1)


def _swd(a: np.ndarray, b: np.ndarray, repeats: int, directions: int, rng: np.random.Generator) -> float:
    results = []
    for _ in range(repeats):
        dirs = rng.standard_normal((a.shape[1], directions))
        dirs /= np.sqrt((dirs**2).sum(axis=0, keepdims=True))
        pa, pb = np.sort(a @ dirs, axis=0), np.sort(b @ dirs, axis=0)
        results.append(float(np.abs(pa - pb).mean()))
    return float(np.mean(results))


@dataclass
class SWDResult:
    per_level: list[float]  # x10^3, finest level first
    average: float  # x10^3

    def to_dict(self) -> dict[str, object]:
        return {"per_level_x1e3": self.per_level, "average_x1e3": self.average}


def sliced_wasserstein(
    a: np.ndarray, b: np.ndarray, per_image: int = 128, size: int = 7, repeats: int = 4, directions: int = 128, seed: int = 0
) -> SWDResult:
    """SWD between two image sets of equal size, per Laplacian level and on average (both x10^3)."""
    if len(a) != len(b):
        raise ValueError(f"SWD compares sets of equal size, got {len(a)} and {len(b)}")
    rng = np.random.default_rng(seed)
    per_level = []
    for la, lb in zip(laplacian_pyramid(a), laplacian_pyramid(b), strict=True):
        da, db = _normalize(_descriptors(la, per_image, size, rng), _descriptors(lb, per_image, size, rng))
        per_level.append(_swd(da, db, repeats, directions, rng) * 1e3)
    return SWDResult(per_level, float(np.mean(per_level)))


def _gaussian_kernel(x: np.ndarray, y: np.ndarray, bandwidth: float) -> np.ndarray:
    d2 = (x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2 * x @ y.T
    return np.exp(-np.maximum(d2, 0) / (2 * bandwidth**2))


def mmd2_unbiased(x: np.ndarray, y: np.ndarray, bandwidth: float) -> float:
    """The unbiased estimate of MMD^2 between samples x [n, d] and y [m, d]."""
    kxx, kyy, kxy = _gaussian_kernel(x, x, bandwidth), _gaussian_kernel(y, y, bandwidth), _gaussian_kernel(x, y, bandwidth)
    n, m = len(x), len(y)
    return float((kxx.sum() - np.trace(kxx)) / (n * (n - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2 * kxy.mean())


@dataclass
class PriorFit:
    mmd2: float
    p_value: float  # permutation test: a small value means the codes do not match the prior
    ks_max: float  # the largest per-dimension Kolmogorov-Smirnov statistic against N(0, std^2)
    ks_mean: float
    bandwidth: float

    def to_dict(self) -> dict[str, float]:
        return dict(vars(self))


def prior_fit(codes: np.ndarray, std: float = 1.0, permutations: int = 200, seed: int = 0) -> PriorFit:
    """How well encoder codes [N, D] match the Gaussian prior N(0, std^2 I)."""
    from scipy import stats

    rng = np.random.default_rng(seed)
    prior = rng.standard_normal(codes.shape) * std
    both = np.concatenate([codes, prior]).astype(np.float64)
    sample = both[rng.choice(len(both), min(len(both), 500), replace=False)]
    d2 = ((sample[:, None, :] - sample[None, :, :]) ** 2).sum(-1)
    bandwidth = float(np.sqrt(np.median(d2[d2 > 0]) / 2))  # the median heuristic
    observed = mmd2_unbiased(both[: len(codes)], both[len(codes) :], bandwidth)
    exceed = 0
    for _ in range(permutations):
        order = rng.permutation(len(both))
        if mmd2_unbiased(both[order[: len(codes)]], both[order[len(codes) :]], bandwidth) >= observed:
            exceed += 1
    ks = [stats.kstest(codes[:, j] / std, "norm").statistic for j in range(codes.shape[1])]
    return PriorFit(observed, (exceed + 1) / (permutations + 1), float(np.max(ks)), float(np.mean(ks)), bandwidth)


@dataclass
class DataCopying:
    z: float  # Mann-Whitney z of generated-vs-held-out distances to train; < -3 suggests copying
    generated_median: float
    held_out_median: float

    def to_dict(self) -> dict[str, float]:
        return dict(vars(self))


def data_copying(generated: np.ndarray, train: np.ndarray, held_out: np.ndarray) -> DataCopying:
    """Meehan et al. (2020): are generated images closer to the training set than new real ones are?"""
    from scipy import stats

    train_thumbs = thumbnails(train)
    gen = nearest_rms(thumbnails(generated), train_thumbs)
    test = nearest_rms(thumbnails(held_out), train_thumbs)
    u = stats.mannwhitneyu(gen, test, alternative="two-sided").statistic
    n, m = len(gen), len(test)
    z = (u - n * m / 2) / np.sqrt(n * m * (n + m + 1) / 12)
    return DataCopying(float(z), float(np.median(gen)), float(np.median(test)))


def near_duplicate_rate(images: np.ndarray, threshold: float) -> float:
    """The fraction of images whose nearest other image is closer than ``threshold`` (thumbnail RMS)."""
    return float((nearest_neighbour_distances(thumbnails(images)) < threshold).mean())
