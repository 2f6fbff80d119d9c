"""The sliced Wasserstein term of the AAE's regularization phase: codes against the prior along many directions.

The latent discriminator judges the codes jointly and, in a long run, wins: it tells codes from prior samples
while the codes keep a covariance far from the prior's (bench/results/ablation-posterior/README.md). The sliced
Wasserstein distance (Kolouri et al., "Sliced-Wasserstein Autoencoders", ICLR 2019) measures what it misses
directly: along each direction, the codes' sorted projections against the prior's quantiles there. The prior's
quantiles come from many more of its samples than the batch has codes, so the target of each sorted code is
nearly exact.

Three groups of directions, each weighing a third:

- the coordinate axes: each coordinate's marginal;
- the eigenvectors of the codes' running covariance: where their second moments differ most from an isotropic
  prior's. Random directions all but miss these in a wide latent (along a random unit vector the variance is
  close to the mean eigenvalue), so they are found as Deshpande et al.'s max-sliced distance (CVPR 2019) finds
  its one worst direction, here from the covariance the slicer tracks across batches (a batch of 64 codes in 32
  dimensions is too few to place them);
- fresh random unit vectors at every step: the rest of the joint shape.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch

PRIOR_SAMPLES = 4096  # prior samples per step for the target quantiles
RANDOM_DIRECTIONS = 64  # random unit directions per step
COVARIANCE_MOMENTUM = 0.02  # the running covariance's weight on each batch (about 50 batches' memory)


class Sampler(Protocol):
    def sample(self, n: int, generator: torch.Generator | None = None, device: str | torch.device = "cpu") -> torch.Tensor: ...


def random_directions(count: int, latent_dim: int, device: torch.device) -> torch.Tensor:
    """[count, latent_dim] unit vectors, uniform on the sphere."""
    drawn = torch.randn(count, latent_dim, device=device)
    return drawn / drawn.norm(dim=1, keepdim=True)


def sliced_distance(codes: torch.Tensor, theta: torch.Tensor, prior: Sampler, prior_samples: int = PRIOR_SAMPLES) -> torch.Tensor:
    """Per direction (the rows of ``theta`` [P, D]): the mean squared distance of the codes [B, D]'s sorted
    projections to the prior's quantiles at the same ranks ((i + 0.5) / B). [P]: squared SW2 terms, in code units."""
    codes = codes.float()
    n = codes.shape[0]
    projected = torch.sort(codes @ theta.T, dim=0).values  # [B, P]
    with torch.no_grad():
        reference = prior.sample(prior_samples, device=codes.device).float() @ theta.T
        ranks = (torch.arange(n, device=codes.device, dtype=torch.float32) + 0.5) / n
        target = torch.quantile(reference, ranks, dim=0)  # [B, P]
    return ((projected - target) ** 2).mean(0)


class PriorSlicer:
    """The term for one training run: it keeps the codes' running covariance (part of a resumable run's state)."""

    def __init__(
        self, prior: Sampler, latent_dim: int, device: torch.device, random: int = RANDOM_DIRECTIONS,
        momentum: float = COVARIANCE_MOMENTUM,
    ) -> None:  # fmt: skip
        self.prior = prior
        self.random = random
        self.momentum = momentum
        self.covariance = torch.eye(latent_dim, device=device)

    def directions(self, codes: torch.Tensor) -> list[torch.Tensor]:
        """The three groups of unit directions, [D, D], [D, D] and [random, D]; updates the running covariance."""
        dim = codes.shape[1]
        with torch.no_grad():
            centred = codes.float() - codes.float().mean(0)
            self.covariance.lerp_(centred.T @ centred / max(len(codes) - 1, 1), self.momentum)
            eigenvectors = torch.linalg.eigh(self.covariance).eigenvectors.T
        axes = torch.eye(dim, device=codes.device)
        return [axes, eigenvectors, random_directions(self.random, dim, codes.device)]

    def __call__(self, codes: torch.Tensor) -> torch.Tensor:
        """The mean over the groups of each group's mean squared SW2 term."""
        groups = [g for g in self.directions(codes) if len(g)]
        return torch.stack([sliced_distance(codes, g, self.prior).mean() for g in groups]).mean()

    def state_dict(self) -> dict[str, Any]:
        return {"covariance": self.covariance.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.covariance.copy_(state["covariance"])
