"""Named training recipes: the choices of the ablation (bench/results/ablation/), in one place.

``synthgen train --recipe NAME`` and ``synthgen evaluate --compare --recipe NAME`` take them; flags given
beside ``--recipe`` still win. Throughput settings (``--bf16``, ``--channels-last``, ``--threads``) are not
part of a recipe: they depend on the machine (bf16 pays only where the CPU has AMX or AVX-512 BF16), not on
the model.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from aae.attribute_teacher import TeacherOptions
from aae.image_adversary import AdversaryOptions
from aae.train import TrainOptions


@dataclass(frozen=True)
class Recipe:
    description: str
    adversary: AdversaryOptions | None = None
    teacher: TeacherOptions | None = None  # a conditional model's; an unconditional run leaves it out
    ema_kimg: float | None = None
    lr_discriminator: float = TrainOptions.lr_discriminator
    lr_generator: float = TrainOptions.lr_generator
    lr_encoder_reconstruction: float | None = TrainOptions.lr_encoder_reconstruction
    disc_steps: int = TrainOptions.disc_steps
    prior_sliced_weight: float = TrainOptions.prior_sliced_weight

    def apply(self, options: TrainOptions, steps: int | None = None) -> TrainOptions:
        """``options`` with this recipe; with a budget of ``steps``, the adversary's warm-up is at most a quarter of it."""
        adversary = self.adversary
        if adversary is not None and steps is not None:
            adversary = replace(adversary, start=min(adversary.start, steps // 4))
        return replace(
            options,
            adversary=adversary,
            teacher=self.teacher if options.conditional else None,
            ema_kimg=self.ema_kimg,
            lr_discriminator=self.lr_discriminator,
            lr_generator=self.lr_generator,
            lr_encoder_reconstruction=self.lr_encoder_reconstruction,
            disc_steps=self.disc_steps,
            prior_sliced_weight=self.prior_sliced_weight,
        )


# v4 with the image adversary after its fix (R1 on StyleGAN2's scale, 0.01), on decoded prior samples: the
# lowest sample SWD of a short ranking against v4 (bench/results/ablation-adversary/README.md); a long run
# should check that image_disc stays below 2
V6 = Recipe(
    "v4 and a patch adversary on decoded prior samples (hinge, R1 0.01 on pixels in [-1, 1], adaptive weight, after 500 steps)",
    adversary=AdversaryOptions(start=500, fakes="prior"),
    teacher=TeacherOptions(),
    ema_kimg=10.0,
    lr_discriminator=1e-4,
    lr_generator=4e-4,
)


V7 = replace(
    V6,
    description="v6 with a stronger latent discriminator (discriminator lr 4e-4, two updates per mini-batch; "
    "generator lr 1e-4); meant for an encoder with a gaussian posterior",
    lr_discriminator=4e-4,
    lr_generator=1e-4,
    disc_steps=2,
)

# v8's weight of the sliced prior term
PRIOR_SLICED_WEIGHT = 10.0

RECIPES: dict[str, Recipe] = {
    "default": Recipe("the decoder trained on the pixel loss alone; the latent game at equal learning rates"),
    # variant g of the ablation: the lowest sample SWD on the same budget
    "sharp": Recipe(
        "a patch adversary on reconstructions and decoded prior samples (hinge, R1 0.1 on pixels in [0, 1], adaptive "
        "weight, after 500 steps), an EMA of the decoder (half-life 10 kimg), the latent game at discriminator lr "
        "1e-4, generator lr 4e-4",
        adversary=AdversaryOptions(start=500, fakes="both", r1_gamma=0.4),  # 0.1 on pixels in [0, 1], as it ran
        ema_kimg=10.0,
        lr_discriminator=1e-4,
        lr_generator=4e-4,
    ),
    # avatars-64 v3's: in its long run the image adversary's discriminator collapsed to one constant output within
    # a few hundred steps (hinge loss 2.000, accuracy 0 on reals and 1 on fakes) and gave the decoder no signal, at
    # 1.5x the cost of a step; without it the same budget buys 1.5x the steps (bench/results/v3/README.md)
    "v3": Recipe(
        "an EMA of the decoder (half-life 10 kimg), the latent game at discriminator lr 1e-4, generator lr 4e-4; "
        "no image adversary",
        ema_kimg=10.0,
        lr_discriminator=1e-4,
        lr_generator=4e-4,
    ),
    # v3 with the attribute teacher, for a conditional model: v3's samples showed facial hair as asked in 72%
    # of images and all identity attributes at once in 86% (bench/results/v3/README.md)
    "v4": Recipe(
        "v3, and for a conditional model an attribute teacher (a classifier trained beside it on real images; its "
        "cross-entropy on decoded prior samples, adaptive weight 0.5, after 250 steps)",
        teacher=TeacherOptions(),
        ema_kimg=10.0,
        lr_discriminator=1e-4,
        lr_generator=4e-4,
    ),
    "v6": V6,
    # v6 with the latent game turned round: v6's generator at 4x its discriminator's learning rate chased the
    # discriminator, which sat at chance while a fresh one told v6's codes from prior samples 86% of the time
    # after 25 steps; here the discriminator learns 4x faster than the generator, twice per mini-batch. Meant with
    # a gaussian posterior (--posterior gaussian): bench/results/ablation-posterior/README.md
    "v7": V7,
    # v7 with the sliced Wasserstein term in the generator's loss (the axes, the codes' covariance eigenvectors and
    # random directions; aae/prior_matching.py) and the encoder at 3e-4 in the reconstruction phase: the lowest
    # MMD^2 of a short ranking (bench/results/ablation-prior-matching/README.md)
    "v8": replace(
        V7,
        description=f"v7 with a sliced Wasserstein term in the generator's loss (weight {PRIOR_SLICED_WEIGHT:g}: the codes' "
        "projections on the axes, their covariance's eigenvectors and random directions against the prior's "
        "quantiles) and the encoder at 3e-4 in the reconstruction phase; meant for an encoder with a gaussian posterior",
        prior_sliced_weight=PRIOR_SLICED_WEIGHT,
        lr_encoder_reconstruction=3e-4,
    ),
}


def recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; expected one of {', '.join(RECIPES)}")
    return RECIPES[name]
