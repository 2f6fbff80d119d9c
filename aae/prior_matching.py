"""The sliced Wasserstein term of the AAE's regularization phase: codes against the prior along many directions.

The latent discriminator judges the codes jointly and, in a long run, wins: it tells codes from prior samples
while the codes keep a covariance far from the prior's (bench/results/ablation-posterior/README.md). The sliced
Wasserstein distance (Kolouri et al., "Sliced-Wasserstein Autoencoders", ICLR 2019) measures what it misses
directly: along each direction, the codes' sorted projections against the prior's quantiles there. Its
directions are the coordinate axes (each coordinate's marginal) and fresh random unit vectors at every step (the
joint shape, the covariance among it). The prior's quantiles come from many more of its samples than the batch
has codes, so the target of each sorted code is nearly exact.
"""

from __future__ import annotations

from typing import Protocol

import torch

PRIOR_SAMPLES = 4096  # prior samples per step for the target quantiles
RANDOM_DIRECTIONS = 64  # random unit directions per step, besides the latent_dim axes


class Sampler(Protocol):
    def sample(self, n: int, generator: torch.Generator | None = None, device: str | torch.device = "cpu") -> torch.Tensor: ...


def directions(latent_dim: int, random: int, device: torch.device) -> torch.Tensor:
    """[latent_dim + random, latent_dim] unit vectors: the axes, then ``random`` uniform on the sphere."""
    axes = torch.eye(latent_dim, device=device)
    drawn = torch.randn(random, latent_dim, device=device)
    return torch.cat([axes, drawn / drawn.norm(dim=1, keepdim=True)])


def sliced_wasserstein_to_prior(
    codes: torch.Tensor, prior: Sampler, random_directions: int = RANDOM_DIRECTIONS, prior_samples: int = PRIOR_SAMPLES
) -> torch.Tensor:
    """Mean squared distance of the codes [B, D]'s sorted projections to the prior's quantiles at the same ranks
    ((i + 0.5) / B), over the D axes (the marginals) and ``random_directions`` random directions (the joint): squared
    SW2, in code units. With the default 64 random directions a 32-dimensional latent's marginals weigh a third."""
    codes = codes.float()
    n, dim = codes.shape
    theta = directions(dim, random_directions, codes.device)
    projected = torch.sort(codes @ theta.T, dim=0).values  # [B, P]
    with torch.no_grad():
        reference = prior.sample(prior_samples, device=codes.device).float() @ theta.T
        ranks = (torch.arange(n, device=codes.device, dtype=torch.float32) + 0.5) / n
        target = torch.quantile(reference, ranks, dim=0)  # [B, P]
    return ((projected - target) ** 2).mean()
