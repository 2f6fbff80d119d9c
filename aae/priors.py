"""Priors p(z) that the adversarial regularization pushes the encoder's codes onto.

Two kinds, as in Makhzani et al. (2015):

- ``gaussian``: N(0, std^2 I), the default.
- ``mixture``: an equal-weight mixture of ``components`` Gaussians N(mu_k, std^2 I). The means lie on
  a sphere of radius ``radius``, in directions drawn once from ``seed`` and then written into the
  spec (``means``), so the exported manifest carries them and the service samples the same prior.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

PRIOR_KINDS = ("gaussian", "mixture")


def mixture_means(components: int, latent_dim: int, radius: float, seed: int) -> list[list[float]]:
    """``components`` points on the sphere of ``radius`` in R^latent_dim, as nested lists for JSON."""
    directions = np.random.default_rng(seed).standard_normal((components, latent_dim))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    return [[round(float(v), 6) for v in row] for row in directions * radius]


def complete_spec(spec: dict[str, Any], latent_dim: int) -> dict[str, Any]:
    """Check a prior spec and fill in its defaults (for a mixture, its means). Idempotent."""
    kind = spec.get("kind")
    if kind not in PRIOR_KINDS:
        raise ValueError(f"unknown prior kind {kind!r}; expected one of: {', '.join(map(repr, PRIOR_KINDS))}")
    std = float(spec.get("std", 1.0 if kind == "gaussian" else 0.5))
    if not std > 0:
        raise ValueError(f"prior std must be > 0, got {std}")
    if kind == "gaussian":
        return {"kind": kind, "std": std}
    components = int(spec.get("components", 10))
    radius = float(spec.get("radius", 2.0))
    seed = int(spec.get("seed", 0))
    if components < 2:
        raise ValueError(f"a mixture prior needs at least 2 components, got {components}")
    means = spec.get("means") or mixture_means(components, latent_dim, radius, seed)
    if len(means) != components or any(len(m) != latent_dim for m in means):
        raise ValueError(f"mixture means must be {components} vectors of length {latent_dim}")
    return {"kind": kind, "std": std, "components": components, "radius": radius, "seed": seed, "means": means}


def marginal_moments(spec: dict[str, Any], latent_dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and standard deviation of the prior's marginals, float32 [latent_dim] each."""
    spec = complete_spec(spec, latent_dim)
    if spec["kind"] == "gaussian":
        return np.zeros(latent_dim, np.float32), np.full(latent_dim, spec["std"], np.float32)
    means = np.asarray(spec["means"], dtype=np.float64)
    mean = means.mean(0)
    std = np.sqrt(spec["std"] ** 2 + (means**2).mean(0) - mean**2)
    return mean.astype(np.float32), std.astype(np.float32)


class GaussianPrior:
    """Isotropic Gaussian N(0, std^2 I)."""

    kind = "gaussian"

    def __init__(self, latent_dim: int, std: float = 1.0) -> None:
        if std <= 0:
            raise ValueError(f"prior std must be > 0, got {std}")
        self.latent_dim = latent_dim
        self.std = std

    def sample(self, n: int, generator: torch.Generator | None = None, device: str | torch.device = "cpu") -> torch.Tensor:
        return torch.randn(n, self.latent_dim, generator=generator).to(device) * self.std

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "std": self.std}


class MixturePrior:
    """Equal-weight mixture of Gaussians N(mu_k, std^2 I)."""

    kind = "mixture"

    def __init__(self, means: list[list[float]], std: float) -> None:
        self.means = torch.tensor(means, dtype=torch.float32)
        self.latent_dim = self.means.shape[1]
        self.std = std

    def sample(self, n: int, generator: torch.Generator | None = None, device: str | torch.device = "cpu") -> torch.Tensor:
        component = torch.randint(0, len(self.means), (n,), generator=generator)
        noise = torch.randn(n, self.latent_dim, generator=generator) * self.std
        return (self.means[component] + noise).to(device)


Prior = GaussianPrior | MixturePrior


def build_prior(spec: dict[str, Any], latent_dim: int) -> Prior:
    """Build a prior from its description in ``AAEConfig.prior``."""
    spec = complete_spec(spec, latent_dim)
    if spec["kind"] == "gaussian":
        return GaussianPrior(latent_dim, spec["std"])
    return MixturePrior(spec["means"], spec["std"])
