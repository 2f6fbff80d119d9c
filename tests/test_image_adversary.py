"""The image adversary's discriminator: it must keep telling close fakes apart, and read its accuracy right."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from aae.image_adversary import AdversaryOptions, ImageAdversary, separation_accuracy


def _close_game(options: AdversaryOptions, steps: int = 300, distance: float = 0.003) -> tuple[float, float]:
    """(hinge loss, mean real logit - mean fake logit) after ``steps`` updates against fakes that differ from the
    real images by a faint line pattern: a decoder that has nearly closed in."""
    torch.manual_seed(0)
    adversary = ImageAdversary(options, 3, torch.device("cpu"), (0.5, 0.999))
    generator = torch.Generator().manual_seed(0)
    pattern = torch.ones(1, 3, 32, 32)
    pattern[..., ::2, :] = -1
    loss = 2.0
    for step in range(steps):
        real = F.interpolate(torch.rand(16, 3, 8, 8, generator=generator), size=32, mode="bilinear")
        fakes = (real + distance * pattern).clamp(0, 1)
        stats = adversary.discriminator_step(real, fakes, step)
        assert stats.image_disc is not None
        loss = stats.image_disc
    with torch.no_grad():
        gap = (adversary.discriminator(real).mean() - adversary.discriminator(fakes).mean()).item()
    return loss, gap


def test_the_default_r1_leaves_the_discriminator_a_slope_against_close_fakes() -> None:
    """R1 as it was (0.1 on pixels in [0, 1], 0.4 on the discriminator's [-1, 1]) flattened it: every logit
    inside the hinge's margin, the collapse of avatars-64 v3's long run."""
    loss, gap = _close_game(AdversaryOptions(r1_every=4, width=8))
    assert loss < 1.0 and gap > 1.0, (loss, gap)
    flat_loss, flat_gap = _close_game(AdversaryOptions(r1_gamma=0.4, r1_every=4, width=8))
    assert flat_loss > 1.5 and flat_gap < 0.5, (flat_loss, flat_gap)


def test_the_accuracy_ignores_a_shift_shared_by_every_logit() -> None:
    real, fake = torch.tensor([[0.2, 0.3, 0.4]]), torch.tensor([[-0.2, -0.3, -0.1]])
    for shift in (-0.8, 0.0, 0.8):
        assert separation_accuracy(real + shift, fake + shift) == (1.0, 1.0)
    assert separation_accuracy(torch.full((1, 4), -0.5), torch.full((1, 6), -0.5)) == (0.0, 0.0)  # a constant output
