"""Priors p(z) that the adversarial regularization pushes the encoder's codes onto."""

from __future__ import annotations

from typing import Any

import torch


class GaussianPrior:
    """Isotropic Gaussian N(0, std^2 I)."""

    kind = "gaussian"

    def __init__(self, latent_dim: int, std: float = 1.0) -> None:
        if std <= 0:
            raise ValueError(f"prior std must be > 0, got {std}")
        self.latent_dim = latent_dim
        self.std = std

    def sample(self, n: int, generator: torch.Generator | None = None, device: str | torch.device = "cpu") -> torch.Tensor:
        return torch.randn(n, self.latent_dim, generator=generator, device=device) * self.std

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "std": self.std}


def build_prior(spec: dict[str, Any], latent_dim: int) -> GaussianPrior:
    """Build a prior from its description in ``AAEConfig.prior``."""
    kind = spec.get("kind")
    if kind == "gaussian":
        return GaussianPrior(latent_dim, float(spec.get("std", 1.0)))
    raise ValueError(f"unknown prior kind {kind!r}; expected one of: 'gaussian'")
