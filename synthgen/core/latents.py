"""Counter-based latents: z for image ``index`` of ``seed`` is a pure function of (seed, index).

Each coordinate j of latent i is drawn from its own 64-bit counter hash (SplitMix64 over seed, i
and j), turned into a uniform in (0, 1) and then into a standard normal by the inverse normal CDF.
No state is carried between images, so any chunk of any job can be computed alone, in any order and
in any batch, and gives the same latents. Truncation maps the uniform into the central
[Phi(-t), Phi(t)] band, which is exactly the normal conditioned on |z| <= t (what resampling until the
coordinate lies within +-t sigma gives), without a loop.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_DIM_KEY = np.uint64(0xD1B54A32D192ED03)
MAX_SEED = 2**63 - 1


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser, elementwise on uint64 (overflow wraps, as intended)."""
    with np.errstate(over="ignore"):
        x = x + _GOLDEN
        x = (x ^ (x >> np.uint64(30))) * _MIX1
        x = (x ^ (x >> np.uint64(27))) * _MIX2
        out: np.ndarray = x ^ (x >> np.uint64(31))
        return out


Seeds = int | np.ndarray  # one seed, or one per index (int64): rows of different jobs or single images at once


def check_seeds(seed: Seeds) -> None:
    """A seed in [0, MAX_SEED], or a 1-d integer array of them; ValueError otherwise."""
    if isinstance(seed, np.ndarray):
        if seed.ndim != 1 or seed.dtype.kind not in "iu" or (len(seed) and (seed.min() < 0 or seed.max() > MAX_SEED)):
            raise ValueError("seeds must be a 1-d integer array with values in [0, 2**63-1]")
    elif not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed must be in [0, 2**63-1], got {seed}")


def seed_key(seed: Seeds) -> np.ndarray:
    """The counter hash's key of a seed, or [N, 1] keys of N seeds (the same key each would have alone)."""
    check_seeds(seed)
    if isinstance(seed, np.ndarray):
        return _splitmix64(seed.astype(np.uint64)).reshape(-1, 1)
    return _splitmix64(np.array([seed], dtype=np.uint64))


def uniforms(seed: Seeds, indices: np.ndarray, dim: int) -> np.ndarray:
    """Uniforms in the open interval (0, 1), float64 [len(indices), dim]; ``seed`` may give each index its own."""
    key = seed_key(seed)
    idx = np.asarray(indices, dtype=np.uint64).reshape(-1, 1)
    if key.ndim == 2 and len(key) != len(idx):
        raise ValueError(f"{len(key)} seeds for {len(idx)} indices: give one seed, or one per index")
    dims = np.arange(1, dim + 1, dtype=np.uint64).reshape(1, -1)
    with np.errstate(over="ignore"):
        row = _splitmix64(key ^ _splitmix64(idx))
        bits = _splitmix64(row ^ (dims * _DIM_KEY))
    # the top 53 bits, centred in their cell, so 0 and 1 are never produced
    return ((bits >> np.uint64(11)).astype(np.float64) + 0.5) / 2.0**53


# Acklam's rational approximation of the inverse normal CDF (relative error < 1.2e-9).
_A = (
    -3.969683028665376e01,
    2.209460984245205e02,
    -2.759285104469687e02,
    1.383577518672690e02,
    -3.066479806614716e01,
    2.506628277459239e00,
)
_B = (-5.447609879822406e01, 1.615858368580409e02, -1.556989798598866e02, 6.680131188771972e01, -1.328068155288572e01)
_C = (
    -7.784894002430293e-03,
    -3.223964580411365e-01,
    -2.400758277161838e00,
    -2.549732539343734e00,
    4.374664141464968e00,
    2.938163982698783e00,
)
_D = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e00, 3.754408661907416e00)
_P_LOW = 0.02425


def _poly(coeffs: tuple[float, ...], x: np.ndarray) -> np.ndarray:
    out = np.full_like(x, coeffs[0])
    for c in coeffs[1:]:
        out = out * x + c
    return out


def inverse_normal_cdf(p: np.ndarray) -> np.ndarray:
    """Phi^-1(p) for p in (0, 1), vectorised."""
    p = np.asarray(p, dtype=np.float64)
    out = np.empty_like(p)
    low, high = p < _P_LOW, p > 1 - _P_LOW
    mid = ~(low | high)
    q = p[mid] - 0.5
    r = q * q
    out[mid] = _poly(_A, r) * q / (_poly(_B, r) * r + 1)
    for mask, sign, tail in ((low, 1.0, p[low]), (high, -1.0, 1 - p[high])):
        s = np.sqrt(-2 * np.log(tail))
        out[mask] = sign * _poly(_C, s) / (_poly(_D, s) * s + 1)
    return out


def _normal_cdf(x: float) -> float:
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))


def latents(seed: Seeds, indices: np.ndarray, dim: int, truncation: float | None = None, std: float = 1.0) -> np.ndarray:
    """float32 latents [len(indices), dim] of a Gaussian prior N(0, std^2), optionally truncated to +-truncation std."""
    return _normal(uniforms(seed, indices, dim), truncation, std)


def _normal(u: np.ndarray, truncation: float | None, std: float) -> np.ndarray:
    """Uniforms in (0, 1) -> float32 samples of N(0, std^2), optionally truncated to +-truncation std."""
    if truncation is not None:
        if not (math.isfinite(truncation) and truncation > 0):
            raise ValueError(f"truncation must be a finite number > 0, got {truncation}")
        lo = _normal_cdf(-truncation)
        u = lo + u * (1 - 2 * lo)
    z = inverse_normal_cdf(u)
    if truncation is not None:
        np.clip(z, -truncation, truncation, out=z)  # guards the last ulp of the approximation
    return (z * std).astype(np.float32)


def mixture_latents(
    seed: Seeds, indices: np.ndarray, means: np.ndarray, std: float, truncation: float | None = None
) -> np.ndarray:
    """float32 latents of an equal-weight mixture of N(means[k], std^2 I); truncation applies within a component.

    Coordinates 1..dim come from the same counter hash as the Gaussian; coordinate dim+1 picks the component.
    """
    k, dim = means.shape
    u = uniforms(seed, indices, dim + 1)
    component = np.minimum((u[:, dim] * k).astype(np.int64), k - 1)
    noise = _normal(u[:, :dim], truncation, std).astype(np.float64)
    out: np.ndarray = (means[component] + noise).astype(np.float32)
    return out


def prior_latents(
    prior: dict[str, Any], seed: Seeds, indices: np.ndarray, dim: int, truncation: float | None = None
) -> np.ndarray:
    """Latents of a model's prior as its manifest describes it (``kind`` gaussian or mixture)."""
    std = float(prior.get("std", 1.0))
    if prior.get("kind") == "mixture":
        return mixture_latents(seed, indices, np.asarray(prior["means"], dtype=np.float64), std, truncation)
    return latents(seed, indices, dim, truncation, std=std)


def slerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Spherical interpolation between latents a and b [dim] at fractions t [steps] -> [steps, dim]."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    cos = np.dot(a64, b64) / max(np.linalg.norm(a64) * np.linalg.norm(b64), 1e-12)
    omega = math.acos(min(1.0, max(-1.0, float(cos))))
    t = np.asarray(t, dtype=np.float64).reshape(-1, 1)
    if omega < 1e-6:
        return ((1 - t) * a64 + t * b64).astype(np.float32)
    s = math.sin(omega)
    return ((np.sin((1 - t) * omega) / s) * a64 + (np.sin(t * omega) / s) * b64).astype(np.float32)


def interpolate_inputs(a: np.ndarray, b: np.ndarray, t: np.ndarray, method: str, latent_dim: int) -> np.ndarray:
    """Decode inputs [steps, D] along the path from row ``a`` to row ``b`` [D], at fractions t [steps].

    The first ``latent_dim`` columns (z) follow ``method``: slerp, which keeps the path at the prior's typical
    radius, or lerp. The rest, a conditional model's one-hot attributes, are blended linearly: the decoder is a
    continuous function of them, so the walk stays continuous where an attribute differs between the ends
    (taking the nearer end's attributes would jump half-way), and t = 0 and t = 1 give exactly the two ends.
    """
    t = np.asarray(t, dtype=np.float64)
    if method == "slerp":
        z = slerp(a[:latent_dim], b[:latent_dim], t)
    elif method == "lerp":
        z = ((1 - t)[:, None] * a[:latent_dim] + t[:, None] * b[:latent_dim]).astype(np.float32)
    else:
        raise ValueError(f"method must be 'slerp' or 'lerp', got {method!r}")
    condition = ((1 - t)[:, None] * a[latent_dim:] + t[:, None] * b[latent_dim:]).astype(np.float32)
    return np.concatenate([z, condition], axis=1)
