"""Sample-quality metrics that need no pretrained network (none can be downloaded here).

All functions take uint8 images [N, H, W, C] or latents [N, D] as numpy arrays.

- ``sliced_wasserstein``: SWD on Laplacian-pyramid patches, as in Karras et al. (2018), "Progressive
  Growing of GANs": 7x7 patches, 128 per image per level, channel-normalized, 4 repeats x 128 random
  directions, reported x10^3 per level and on average.
- ``mmd2_unbiased``, ``mmd2_permutation_test`` and ``prior_fit``: how well encoded images match the prior,
  given samples of it, whatever its kind (MMD^2 with a Gaussian kernel and a permutation-test p-value, plus a
  per-dimension Kolmogorov-Smirnov statistic against ``prior_marginals``); ``gaussian_prior_fit`` for N(0, s^2 I).
- ``data_copying``: the Meehan et al. (2020) test: generated-to-train nearest-neighbour distances
  against held-out-to-train ones; a strongly negative z means the model copies its training set.
- ``near_duplicate_rate``: the fraction of samples with a neighbour closer than the uniqueness threshold.
- ``interpolation_swd``: the SWD of decoded midpoints of latent pairs against that of their endpoints.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from synthgen.core.similarity import nearest_neighbour_distances, nearest_rms, thumbnails

_BINOMIAL = (1 / 16, 4 / 16, 6 / 16, 4 / 16, 1 / 16)


def _blur(x: np.ndarray) -> np.ndarray:
    """Separable 5-tap binomial blur of [N, H, W, C] float images, reflecting at the borders."""
    padded = np.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)), mode="reflect")
    H, W = x.shape[1:3]  # height, width
    rows = np.zeros((x.shape[0], H, W + 4, x.shape[3]), dtype=x.dtype)
    for i, w in enumerate(_BINOMIAL):
        rows += w * padded[:, i : i + H, :, :]
    out = np.zeros_like(x)
    for i, w in enumerate(_BINOMIAL):
        out += w * rows[:, :, i : i + W, :]
    return out


def laplacian_pyramid(images: np.ndarray, min_size: int = 16) -> list[np.ndarray]:
    """Levels from finest to coarsest (float32); the last is the coarsest Gaussian level itself."""
    current = images.astype(np.float32) / np.float32(127.5) - np.float32(1.0)
    levels = []
    while current.shape[1] > min_size:
        down = _blur(current)[:, ::2, ::2, :]
        up = np.repeat(np.repeat(down, 2, axis=1), 2, axis=2)
        levels.append(current - _blur(up))
        current = down
    levels.append(current)
    return levels


def _patch_positions(shape: tuple[int, ...], per_image: int, size: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """Index arrays of ``per_image`` random size x size patches per image of a level of ``shape`` [N, H, W, C]."""
    N, H, W = shape[:3]  # count, height, width
    ys = rng.integers(0, H - size + 1, N * per_image)
    xs = rng.integers(0, W - size + 1, N * per_image)
    owner = np.repeat(np.arange(N), per_image)
    grid = np.arange(size)
    rows = ys[:, None, None] + grid[None, :, None]  # [P, size, 1]
    cols = xs[:, None, None] + grid[None, None, :]  # [P, 1, size]
    return owner[:, None, None], rows, cols


def _normalize(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Channel-normalize both descriptor sets with the statistics of their union (accumulated in float64)."""
    C = a.shape[-1]  # channels
    flat = (a.reshape(-1, C), b.reshape(-1, C))
    count = sum(len(f) for f in flat)
    mean = sum(f.sum(axis=0, dtype=np.float64) for f in flat) / count
    square = sum(np.einsum("ij,ij->j", f, f, dtype=np.float64) for f in flat) / count
    std = np.sqrt(np.maximum(square - mean**2, 0.0)) + 1e-8
    m, s = mean.astype(a.dtype), std.astype(a.dtype)
    out_a, out_b = a - m, b - m
    out_a /= s
    out_b /= s
    return out_a.reshape(len(a), -1), out_b.reshape(len(b), -1)


def _swd(a: np.ndarray, b: np.ndarray, repeats: int, directions: int, rng: np.random.Generator) -> float:
    results = []
    for _ in range(repeats):
        dirs = rng.standard_normal((a.shape[1], directions))
        dirs /= np.sqrt((dirs**2).sum(axis=0, keepdims=True))
        dirs_t = np.ascontiguousarray(dirs.T, dtype=a.dtype)  # [directions, dim]
        pa, pb = dirs_t @ a.T, dirs_t @ b.T  # [directions, P]: each projection sorted along a contiguous row
        pa.sort(axis=1)
        pb.sort(axis=1)
        results.append(float(np.abs(pa - pb).mean(dtype=np.float64)))
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
    """SWD between two image sets of equal size, per Laplacian level and on average (both x10^3).

    Both sets take their patches at the same random positions (image i of ``a`` and image i of ``b`` alike):
    the positions are independent of the images, so each set is still a uniform sample of its patches, and the
    common positions remove one source of noise. A set against itself scores exactly 0.
    """
    if a.shape != b.shape:
        raise ValueError(f"SWD compares sets of equal size and shape, got {a.shape} and {b.shape}")
    rng = np.random.default_rng(seed)
    per_level = []
    for la, lb in zip(laplacian_pyramid(a), laplacian_pyramid(b), strict=True):
        where = _patch_positions(la.shape, per_image, size, rng)
        da, db = _normalize(la[where], lb[where])
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
    ks_max: float  # the largest per-dimension Kolmogorov-Smirnov statistic
    ks_mean: float
    ks_critical: float  # the KS statistic's 5% critical value at these sample sizes (one dimension)
    bandwidth: float
    codes: int
    prior_samples: int
    permutations: int

    def to_dict(self) -> dict[str, float]:
        return dict(vars(self))


def median_bandwidth(x: np.ndarray, y: np.ndarray, rng: np.random.Generator, sample: int = 500) -> float:
    """The median heuristic: sqrt(median squared distance / 2) within a subsample of the pooled sets."""
    both = np.concatenate([x, y]).astype(np.float64)
    pooled = both[rng.choice(len(both), min(len(both), sample), replace=False)]
    d2 = ((pooled[:, None, :] - pooled[None, :, :]) ** 2).sum(-1)
    return float(np.sqrt(np.median(d2[d2 > 0]) / 2))


def mmd2_permutation_test(
    x: np.ndarray, y: np.ndarray, bandwidth: float, permutations: int = 200, seed: int = 0
) -> tuple[float, float]:
    """(unbiased MMD^2, permutation p-value): one kernel matrix, every permutation in one matrix product."""
    both = np.concatenate([x, y]).astype(np.float64)
    kernel = _gaussian_kernel(both, both, bandwidth)
    np.fill_diagonal(kernel, 0.0)
    n, m = len(x), len(y)
    rng = np.random.default_rng(seed)
    labels = np.zeros((len(both), permutations + 1))
    labels[:n, 0] = 1.0  # column 0 is the observed split, the others are permutations of it
    for j in range(1, permutations + 1):
        labels[rng.permutation(len(both))[:n], j] = 1.0
    kx = kernel @ labels  # row i: the kernel sums of i against each split's x side
    xx = (labels * kx).sum(0)
    xy = ((1 - labels) * kx).sum(0)
    yy = kernel.sum() - xx - 2 * xy
    mmd2 = xx / (n * (n - 1)) + yy / (m * (m - 1)) - 2 * xy / (n * m)
    p_value = (np.count_nonzero(mmd2[1:] >= mmd2[0]) + 1) / (permutations + 1)
    return float(mmd2[0]), float(p_value)


Marginal = Callable[[np.ndarray], np.ndarray]


def prior_marginals(prior: dict[str, Any], dim: int) -> list[Marginal]:
    """The exact CDF of each coordinate of a prior spec (``gaussian``, or an equal-weight ``mixture``)."""
    from scipy import stats

    std = float(prior.get("std", 1.0))
    if prior.get("kind") != "mixture":
        return [partial(stats.norm.cdf, scale=std)] * dim
    means = np.asarray(prior["means"], dtype=np.float64)  # [components, dim]

    def mixture_cdf(x: np.ndarray, centres: np.ndarray) -> np.ndarray:
        out: np.ndarray = stats.norm.cdf((np.asarray(x)[..., None] - centres) / std).mean(-1)
        return out

    return [partial(mixture_cdf, centres=means[:, j]) for j in range(dim)]


def _ks(codes: np.ndarray, prior_samples: np.ndarray, marginals: list[Marginal] | None) -> tuple[np.ndarray, float]:
    """Per-dimension KS statistics (one-sample against exact marginals if given) and the 5% critical value."""
    from scipy import stats

    n, m = len(codes), len(prior_samples)
    if marginals is not None:
        ks = [stats.kstest(codes[:, j], marginals[j]).statistic for j in range(codes.shape[1])]
        return np.asarray(ks), 1.358 / np.sqrt(n)
    ks = [stats.ks_2samp(codes[:, j], prior_samples[:, j]).statistic for j in range(codes.shape[1])]
    return np.asarray(ks), 1.358 * np.sqrt((n + m) / (n * m))


def prior_fit(
    codes: np.ndarray,
    prior_samples: np.ndarray,
    permutations: int = 200,
    seed: int = 0,
    marginals: list[Marginal] | None = None,
) -> PriorFit:
    """How well encoder codes [N, D] match a prior, given samples of it [M, D] (any prior: Gaussian, mixture).

    MMD^2 (Gaussian kernel, median-heuristic bandwidth, unbiased) with a permutation-test p-value, and the
    per-dimension Kolmogorov-Smirnov statistic: one-sample against ``marginals`` (the exact per-coordinate
    CDFs, see ``prior_marginals``) when given, else two-sample against the prior samples' coordinates.
    """
    if codes.ndim != 2 or prior_samples.ndim != 2 or codes.shape[1] != prior_samples.shape[1]:
        raise ValueError(f"codes {codes.shape} and prior samples {prior_samples.shape} must be [N, D] and [M, D]")
    rng = np.random.default_rng(seed)
    bandwidth = median_bandwidth(codes, prior_samples, rng)
    mmd2, p_value = mmd2_permutation_test(codes, prior_samples, bandwidth, permutations, seed)
    ks, critical = _ks(codes, prior_samples, marginals)
    return PriorFit(
        mmd2, p_value, float(ks.max()), float(ks.mean()), float(critical), bandwidth, len(codes), len(prior_samples), permutations
    )


def gaussian_prior_fit(codes: np.ndarray, std: float = 1.0, permutations: int = 200, seed: int = 0) -> PriorFit:
    """``prior_fit`` against N(0, std^2 I): as many prior samples as codes, and the exact normal marginals."""
    prior = np.random.default_rng(seed + 1).standard_normal(codes.shape) * std
    return prior_fit(codes, prior, permutations, seed, prior_marginals({"kind": "gaussian", "std": std}, codes.shape[1]))


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


def midpoints(a: np.ndarray, b: np.ndarray, method: str = "slerp") -> np.ndarray:
    """The latent halfway between each row of ``a`` and ``b`` [N, D]: ``slerp`` (as the service's strips) or ``lerp``."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    if method == "lerp":
        return ((a64 + b64) / 2).astype(np.float32)
    if method != "slerp":
        raise ValueError(f"method must be 'slerp' or 'lerp', got {method!r}")
    norms = np.maximum(np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1), 1e-12)
    omega = np.arccos(np.clip((a64 * b64).sum(1) / norms, -1.0, 1.0))
    # slerp at t = 1/2 is (a + b) sin(omega/2) / sin(omega) = (a + b) / (2 cos(omega/2))
    return ((a64 + b64) / (2 * np.maximum(np.cos(omega / 2), 1e-6))[:, None]).astype(np.float32)


@dataclass
class InterpolationSWD:
    method: str
    pairs: int
    endpoints: SWDResult  # the decoded endpoints against the real images
    midpoints: SWDResult  # the decoded midpoints against the same real images

    @property
    def ratio(self) -> float:
        """Midpoint SWD over endpoint SWD: about 1 when the path between two faces stays among faces."""
        return self.midpoints.average / max(self.endpoints.average, 1e-12)

    def to_dict(self) -> dict[str, object]:
        return {
            "method": self.method,
            "pairs": self.pairs,
            "endpoints": self.endpoints.to_dict(),
            "midpoints": self.midpoints.to_dict(),
            "ratio": self.ratio,
        }


def interpolation_swd(
    decode: Callable[[np.ndarray], np.ndarray],
    a: np.ndarray,
    b: np.ndarray,
    reference: np.ndarray,
    method: str = "slerp",
    per_image: int = 128,
    seed: int = 0,
    endpoints: SWDResult | None = None,
    between: Callable[[np.ndarray, np.ndarray, str], np.ndarray] = midpoints,
) -> InterpolationSWD:
    """SWD against real images [N, H, W, C] of the midpoints of latent pairs (a_i, b_i), and of the endpoints a_i.

    The point between a cat and a dog should not be a Pegasus: a model whose latent space has holes between its
    training codes decodes midpoints that are further from real images than its endpoints are.
    ``endpoints``: the endpoints' SWD from an earlier call on the same pairs and settings, to reuse.
    ``between``: the midpoints of the pairs (a conditional model's ``Generator.midpoints`` also blends the attributes).
    """
    if not len(a) == len(b) == len(reference):
        raise ValueError(f"expected as many pairs as reference images, got {len(a)}, {len(b)} and {len(reference)}")
    ends = endpoints or sliced_wasserstein(decode(a), reference, per_image=per_image, seed=seed)
    middle = sliced_wasserstein(decode(between(a, b, method)), reference, per_image=per_image, seed=seed)
    return InterpolationSWD(method, len(a), ends, middle)
