"""An adversary on images, added to any model kind: a patch discriminator (pix2pix's PatchGAN) with hinge loss.

The decoder's adversarial term is weighted as in VQGAN (Esser et al. 2021): the ratio of the gradient
norms of the reconstruction loss and of the adversarial loss at the decoder's last layer, clamped. The
discriminator gets a lazy R1 penalty on real images (Mescheder et al. 2018; every ``r1_every`` steps, scaled
by it, as StyleGAN2 does), starts after ``start`` steps, and skips its updates while its running accuracy
is very high on real and on fake images alike (a discriminator that wins outright gives the decoder useless gradients).

R1 is taken on the discriminator's own input, pixels in [-1, 1] as in StyleGAN2, so that its ``r1_gamma``
is StyleGAN2's. Too strong a penalty flattens the discriminator: against fakes a distance d from the real
images, the hinge loss gains about s * d from a slope s while R1 costs gamma * s^2, so the slope settles
near d / gamma and the logits' spread near d^2 / gamma. As the decoder closes in, every logit ends inside the
hinge's margin (loss 2.000) and the adaptive weight hits its clamp. Inside that margin the hinge loss does
not depend on a shift shared by all logits (the last bias gets no gradient), so the accuracies are taken
at the midpoint of the real and fake logits, not at 0: a shared shift alone read as "accuracy 0 on real
images, 1 on fakes" (bench/results/ablation-adversary/README.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from aae.losses import hinge_discriminator, hinge_generator, r1_penalty

FAKES = ("both", "recon", "prior")


@dataclass
class AdversaryOptions:
    start: int = 500  # steps of reconstruction alone before the adversary starts (warm-up)
    fakes: str = "both"  # "recon": reconstructions, "prior": decoded prior samples, "both"
    lr: float = 2e-4
    weight: float = 0.5  # multiplies the adaptive weight
    max_weight: float = 1.0  # the clamp on weight * adaptive ratio
    # on the discriminator's input, pixels in [-1, 1]; StyleGAN2's rule of thumb, 0.0002 * pixels / batch, is
    # 0.0128 at 64 px and batch 64
    r1_gamma: float = 0.01
    r1_every: int = 16
    freeze_accuracy: float = 0.95  # skip discriminator updates while its running accuracy is above this
    width: int = 32

    def __post_init__(self) -> None:
        if self.fakes not in FAKES:
            raise ValueError(f"adversary fakes must be one of {', '.join(FAKES)}, got {self.fakes!r}")


class PatchDiscriminator(nn.Module):
    """Images [B, C, H, W] in [0, 1] -> one logit per overlapping patch, [B, H/8 * W/8]."""

    def __init__(self, channels: int = 3, width: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, width, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(width, 2 * width, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(2 * width, 4 * width, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(4 * width, 1, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(x * 2 - 1)

    def logits(self, signed: torch.Tensor) -> torch.Tensor:
        """The same on images in [-1, 1], the scale R1 is taken on."""
        out: torch.Tensor = self.net(signed).flatten(1)
        return out.float()


def adaptive_weight(rec_loss: torch.Tensor, adv_loss: torch.Tensor, last: torch.Tensor, weight: float, clamp: float) -> float:
    """VQGAN's weight: weight * |d rec / d last| / |d adv / d last|, clamped to [0, clamp]."""
    (g_rec,) = torch.autograd.grad(rec_loss, last, retain_graph=True)
    (g_adv,) = torch.autograd.grad(adv_loss, last, retain_graph=True)
    ratio = float(g_rec.norm() / (g_adv.norm() + 1e-4))
    return min(max(weight * ratio, 0.0), clamp)


def separation_accuracy(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> tuple[float, float]:
    """The fractions of real logits above, and of fake logits below, the midpoint of the two means.

    Not the threshold 0: inside the hinge's margin a shift shared by every logit changes neither the loss nor
    its gradient, so the sign of a logit says where that shift drifted, not whether the patch was told apart.
    One constant output scores 0 on both.
    """
    threshold = (logits_real.mean() + logits_fake.mean()) / 2
    return (logits_real > threshold).float().mean().item(), (logits_fake < threshold).float().mean().item()


@dataclass
class AdversaryStats:
    image_disc: float | None = None
    image_gen: float | None = None
    image_weight: float | None = None
    image_real_accuracy: float | None = None
    image_fake_accuracy: float | None = None
    image_frozen: float | None = None  # 1.0 on steps the discriminator skipped its update


class ImageAdversary:
    """The discriminator, its optimizer and its running accuracies; ``active`` once warm-up is over."""

    def __init__(self, options: AdversaryOptions, channels: int, device: torch.device, betas: tuple[float, float]) -> None:
        self.options = options
        self.discriminator = PatchDiscriminator(channels, options.width).to(device)
        self.optimizer = torch.optim.Adam(self.discriminator.parameters(), lr=options.lr, betas=betas)
        self.real_accuracy = 0.5  # running means (decay 0.9) that decide the freeze
        self.fake_accuracy = 0.5

    def active(self, step: int) -> bool:
        return step >= self.options.start

    def generator_loss(self, fakes: torch.Tensor) -> torch.Tensor:
        """The decoder's hinge loss on ``fakes``; the discriminator's weights get no gradient from it."""
        self.discriminator.requires_grad_(False)
        loss = hinge_generator(self.discriminator(fakes))
        self.discriminator.requires_grad_(True)
        return loss

    def frozen(self) -> bool:
        limit = self.options.freeze_accuracy
        return self.real_accuracy > limit and self.fake_accuracy > limit

    def discriminator_step(self, real: torch.Tensor, fakes: torch.Tensor, step: int) -> AdversaryStats:
        """One update on real images and (detached) fakes, unless frozen; the lazy R1 term every r1_every steps."""
        o = self.options
        frozen = self.frozen()
        lazy_r1 = o.r1_gamma > 0 and step % o.r1_every == 0
        real = (real.detach() * 2 - 1).requires_grad_(lazy_r1)
        logits_real, logits_fake = self.discriminator.logits(real), self.discriminator(fakes.detach())
        loss = hinge_discriminator(logits_real, logits_fake)
        if not frozen:
            total = loss
            if lazy_r1:
                total = total + 0.5 * o.r1_gamma * o.r1_every * r1_penalty(logits_real, real)
            self.optimizer.zero_grad(set_to_none=True)
            total.backward()
            self.optimizer.step()
        real_acc, fake_acc = separation_accuracy(logits_real.detach(), logits_fake.detach())
        self.real_accuracy = 0.9 * self.real_accuracy + 0.1 * real_acc
        self.fake_accuracy = 0.9 * self.fake_accuracy + 0.1 * fake_acc
        return AdversaryStats(loss.item(), None, None, real_acc, fake_acc, float(frozen))

    def state_dict(self) -> dict[str, Any]:
        return {
            "discriminator": self.discriminator.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "accuracy": [self.real_accuracy, self.fake_accuracy],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.discriminator.load_state_dict(state["discriminator"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.real_accuracy, self.fake_accuracy = state["accuracy"]
