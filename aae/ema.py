"""An exponential moving average of a module's weights, with StyleGAN2-ADA's ramp (Karras et al. 2020).

The half-life is ``half_life_kimg`` thousand images, shortened to ``ramp`` times the images seen so far
early in training, so the average does not drag in the random initial weights. Buffers (BatchNorm's
running statistics) are copied, not averaged.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


class WeightEMA:
    def __init__(self, module: nn.Module, half_life_kimg: float = 10.0, ramp: float | None = 0.05) -> None:
        self.module = copy.deepcopy(module).eval().requires_grad_(False)
        self.half_life_kimg = half_life_kimg
        self.ramp = ramp

    def beta(self, batch: int, images_seen: int) -> float:
        half_life = self.half_life_kimg * 1000
        if self.ramp is not None:
            half_life = min(half_life, images_seen * self.ramp)
        return float(0.5 ** (batch / max(half_life, 1e-8)))

    @torch.no_grad()
    def update(self, live: nn.Module, batch: int, images_seen: int) -> None:
        beta = self.beta(batch, images_seen)
        for average, current in zip(self.module.parameters(), live.parameters(), strict=True):
            average.lerp_(current.detach(), 1.0 - beta)
        for kept, buffer in zip(self.module.buffers(), live.buffers(), strict=True):
            kept.copy_(buffer)

    def state_dict(self) -> dict[str, Any]:
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state)
