"""Training loop of the AAE: per mini-batch, a reconstruction phase and then a regularization phase.

Phase 1 (reconstruction): encoder and decoder minimise the reconstruction error.
Phase 2 (regularization): the discriminator learns to tell prior samples from encoder codes, then the
encoder is updated to fool it, which pushes the aggregated posterior q(z) onto the prior p(z).
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import random
import signal
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from aae.attribute_teacher import AttributeTeacher, TeacherOptions, TeacherStats, initial_teachers, saved_teachers, teachers_in
from aae.data import image_grid, load_dataset
from aae.ema import WeightEMA
from aae.image_adversary import AdversaryOptions, AdversaryStats, ImageAdversary, adaptive_weight
from aae.labels import LABEL_FILES, load_labels
from aae.losses import reconstruction_loss
from aae.model import AAE, AAEConfig, images_uint8
from aae.package_start import is_package, package_checkpoint
from aae.prior_matching import PriorSlicer
from aae.priors import build_prior
from synthgen.core.files import atomic_file

log = logging.getLogger(__name__)

BETAS = (0.5, 0.999)  # Adam, for every phase


@dataclass
class TrainOptions:
    data: str = "avatars"  # "avatars", "lfw", or a folder of images
    count: int = 20000  # images to use (rendered for avatars, at most this many from a folder)
    epochs: int = 10
    batch_size: int = 64
    lr_reconstruction: float = 1e-3
    # the encoder's learning rate in the reconstruction phase (None: lr_reconstruction): below it, the AAE's
    # regularization phase gets a larger share of the encoder's updates
    lr_encoder_reconstruction: float | None = None
    lr_discriminator: float = 2e-4
    lr_generator: float = 2e-4
    seed: int = 0
    data_seed: int = 0
    out_dir: str = "runs/aae"
    cache_dir: str = "cache"
    device: str = "auto"
    max_steps: int | None = None  # stop early, for smoke tests
    max_minutes: float | None = None  # stop (resumably) after this much training time, resumed runs' time included
    log_every: int = 25
    threads: int | None = None
    amp: bool = True  # bfloat16 autocast when training on CUDA
    bf16: bool = False  # bfloat16 autocast on CPU too (AMX); the decoder's last conv, the sigmoid and the losses stay float32
    channels_last: bool = False  # NHWC memory format for the convolutions
    vae_sigma: float = 0.1  # the VAE baseline's decoder standard deviation (pixel values in [0, 1])
    recon_loss: str = "mse"  # "mse", "l1" or "laplacian" (GLO's Laplacian-pyramid L1); see aae/losses.py
    frequency_weight: float = 0.0  # adds this times the L1 distance of the 2D spectra
    # AAE only: one encoder forward for the reconstruction and the generator losses. The generator's gradient
    # at the codes is scaled to gen_weight times the norm of the reconstruction's, and one optimizer steps both.
    shared_encoder: bool = False
    gen_weight: float = 0.2
    disc_steps: int = 1  # AAE: latent discriminator updates per mini-batch
    # AAE: the generator's loss adds this times the squared sliced Wasserstein distance of the codes to the prior
    # (aae/prior_matching.py); 0: the discriminator alone
    prior_sliced_weight: float = 0.0
    adversary: AdversaryOptions | None = None  # the image adversary, an added phase for any kind
    # a conditional model only: an attribute teacher (aae/attribute_teacher.py), an added phase
    teacher: TeacherOptions | None = None
    ema_kimg: float | None = None  # half-life (thousands of images) of an EMA of the decoder; None: no EMA
    export_ema: bool = True  # with an EMA: tools (export, evaluate, grids) use the EMA decoder
    checkpoint_minutes: float = 5.0  # also checkpoint (resumable) this often, besides every epoch
    # A conditional model: the decoder takes the data's labels (aae/labels.py) beside z (the supervised AAE)
    conditional: bool = False
    # A fine-tune: start from this checkpoint (or run folder) of the same architecture: its model, decoder EMA and
    # teachers; the optimizers, the step count, the data order and the added phases' warm-ups start afresh
    init: str | None = None
    # the decoder takes no update for this many steps: a fine-tune from a package, whose encoder starts afresh,
    # first learns to invert the decoder (the added phases' decoder terms wait for it too)
    decoder_frozen_steps: int = 0
    config: AAEConfig = field(default_factory=AAEConfig)

    def __post_init__(self) -> None:
        if self.teacher is not None and not self.conditional:
            raise ValueError("the attribute teacher needs a conditional model (--conditional)")
        if self.decoder_frozen_steps < 0:
            raise ValueError(f"decoder_frozen_steps must be >= 0, got {self.decoder_frozen_steps}")
        if self.prior_sliced_weight < 0:
            raise ValueError(f"prior_sliced_weight must be >= 0, got {self.prior_sliced_weight}")
        if self.prior_sliced_weight and self.config.kind != "aae":
            raise ValueError("the sliced prior term is part of the AAE's regularization phase (kind 'aae')")

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "config"}

    @classmethod
    def from_dict(cls, data: dict[str, Any], config: AAEConfig) -> TrainOptions:
        """Options saved in a checkpoint; keys from before an option existed take its default."""
        known = {f for f in cls.__dataclass_fields__ if f != "config"}
        values = {k: v for k, v in data.items() if k in known}
        if values.get("adversary") is not None:
            values["adversary"] = AdversaryOptions(**values["adversary"])
        if values.get("teacher") is not None:
            values["teacher"] = TeacherOptions(**values["teacher"])
        return cls(**values, config=config)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@dataclass
class StepLosses:
    reconstruction: float  # mean squared error per pixel, comparable across model kinds
    discriminator: float | None = None  # AAE only
    generator: float | None = None  # AAE only
    disc_accuracy: float | None = None  # AAE: fraction of prior and encoder codes classified right
    kl: float | None = None  # VAE only: KL(q(z|x) || p(z)) per image, in nats
    recon_loss: float | None = None  # the training loss when it is not the MSE
    gen_weight: float | None = None  # AAE with a shared encoder forward: the generator gradient's scale
    prior_sliced: float | None = None  # AAE with the sliced prior term: squared SW2 of the codes to the prior
    image_disc: float | None = None  # the image adversary (see aae/image_adversary.py)
    image_gen: float | None = None
    image_weight: float | None = None
    image_real_accuracy: float | None = None
    image_fake_accuracy: float | None = None
    image_frozen: float | None = None
    control: float | None = None  # the attribute teacher (see aae/attribute_teacher.py)
    control_weight: float | None = None
    control_accuracy: float | None = None
    teacher: float | None = None
    teacher_accuracy: float | None = None


def _to_memory_format(module: nn.Module, memory_format: torch.memory_format) -> None:
    cast(Any, module).to(memory_format=memory_format)  # torch's stubs lack the memory_format keyword


def _with(losses: StepLosses, stats: AdversaryStats | TeacherStats) -> StepLosses:
    return replace(losses, **{k: v for k, v in asdict(stats).items() if v is not None})


class Trainer:
    """Owns the model and its optimizers; ``step`` is one mini-batch update. Subclasses per kind.

    Shared by every kind: the reconstruction loss, the added phases after the model's own (the image
    adversary, the attribute teacher), the decoder's EMA, and the state a resumed run needs (``state_dict``).
    """

    def __init__(self, config: AAEConfig, options: TrainOptions, device: torch.device) -> None:
        self.device = device
        self.options = options
        self.model = AAE(config).to(device)
        self.memory_format = torch.channels_last if options.channels_last else torch.contiguous_format
        _to_memory_format(self.model, self.memory_format)
        self.prior = build_prior(config.prior, config.latent_dim)
        # bfloat16 autocast: no loss scaling needed, and the losses are computed in float32
        self.amp = (options.amp and device.type == "cuda") or (options.bf16 and device.type == "cpu")
        m = self.model
        # one parameter group, as runs from before the encoder's own rate were written (their --resume loads it)
        groups: list[dict[str, Any]] = [{"params": list(m.encoder.parameters()) + list(m.decoder.parameters())}]
        if options.lr_encoder_reconstruction is not None:
            groups = [
                {"params": list(m.encoder.parameters()), "lr": options.lr_encoder_reconstruction},
                {"params": list(m.decoder.parameters())},
            ]
        self.opt_autoencoder = torch.optim.Adam(
            groups,
            lr=options.lr_reconstruction,
            betas=BETAS,
        )
        self.adversary = ImageAdversary(options.adversary, config.channels, device, BETAS) if options.adversary else None
        if self.adversary is not None:
            _to_memory_format(self.adversary.discriminator, self.memory_format)
        self.teacher = (
            AttributeTeacher(
                options.teacher, config.image_size, config.channels, config.attributes or {}, device, BETAS, options.seed + 1
            )
            if options.teacher
            else None
        )
        self.ema = WeightEMA(m.decoder, options.ema_kimg) if options.ema_kimg else None
        self.steps_done = 0
        self.images_before = 0  # a fine-tune: the images its EMA had averaged already (the EMA's warm-up ramp)
        self.condition: torch.Tensor | None = None  # the batch's one-hot labels, for a conditional model
        self.visible: torch.Tensor | None = None  # which of the batch's labels its images show [B, attributes]
        self._prior_decodes: torch.Tensor | None = None  # this step's decoded prior samples (_decoded_prior)

    def autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp)

    def _update(self, optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def step(self, x: torch.Tensor, condition: torch.Tensor | None = None, visible: torch.Tensor | None = None) -> StepLosses:
        """One mini-batch: the kind's phases, then the added phases' own updates, then the EMA.

        ``condition``: the batch's one-hot labels [B, condition_dim] when the model is conditional;
        ``visible``: which of them each image shows [B, attributes] (all, when not given).
        """
        x = x.contiguous(memory_format=self.memory_format)
        if self.model.config.condition_dim and condition is None:
            raise ValueError("a conditional model trains on labeled data: pass the batch's condition")
        self.condition = condition
        if condition is not None and visible is None:
            space = self.model.config.attribute_space
            assert space is not None
            visible = torch.ones(condition.shape[0], len(space.names), dtype=torch.bool, device=condition.device)
        self.visible = visible
        self.model.decoder.requires_grad_(self.decoder_training)
        losses = self._step(x)
        self._prior_decodes = None
        self.steps_done += 1
        if self.ema is not None:
            self.ema.update(self.model.decoder, x.shape[0], self.images_before + self.steps_done * x.shape[0])
        return losses

    @property
    def decoder_training(self) -> bool:
        """False during ``decoder_frozen_steps``: the decoder's weights take no gradient and no added term."""
        return self.steps_done >= self.options.decoder_frozen_steps

    def _step(self, x: torch.Tensor) -> StepLosses:
        raise NotImplementedError

    def _decoder_loss(self, x: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, StepLosses, torch.Tensor | None]:
        """Decode z; the reconstruction loss plus the weighted adversarial term; the fakes for the discriminator."""
        x_hat = self.model.decoder(z, self.condition).float()
        rec = reconstruction_loss(self.options.recon_loss, x_hat, x, self.options.frequency_weight)
        mse = rec if self.options.recon_loss == "mse" and not self.options.frequency_weight else F.mse_loss(x_hat.detach(), x)
        losses = StepLosses(mse.item(), recon_loss=None if rec is mse else rec.item())
        return self._added_terms(rec, x_hat, losses)

    def _added_terms(
        self, rec: torch.Tensor, x_hat: torch.Tensor, losses: StepLosses
    ) -> tuple[torch.Tensor, StepLosses, torch.Tensor | None]:
        """The decoder's loss ``rec`` plus the added phases' terms (image adversary, attribute teacher)."""
        loss, stats, fakes = self._adversarial_term(rec, x_hat)
        loss, control = self._control_term(rec, loss, x_hat.shape[0])
        return loss, _with(_with(losses, stats), control), fakes

    def _control_term(self, rec: torch.Tensor, loss: torch.Tensor, batch: int) -> tuple[torch.Tensor, TeacherStats]:
        """The attribute teacher's term on decoded prior samples, each with another image's labels."""
        teacher = self.teacher
        if teacher is None or self.condition is None or self.visible is None:
            return loss, TeacherStats()
        if not (teacher.active(self.steps_done) and self.decoder_training):
            return loss, TeacherStats()
        decoded, labels, visible = self._decoded_prior(max(batch // 2, 1))
        assert labels is not None and visible is not None
        control, stats = teacher.decoder_loss(decoded, labels, visible)
        o = teacher.options
        weight = adaptive_weight(rec, control, self._last_weight(), o.weight, o.max_weight)
        return loss + weight * control, replace(stats, control_weight=weight)

    def _last_weight(self) -> torch.Tensor:
        """The decoder's last conv weight, where the added terms' adaptive weights compare gradient norms."""
        last = self.model.decoder.last_layer.weight
        assert isinstance(last, torch.Tensor)
        return last

    def _adversarial_term(
        self, rec: torch.Tensor, x_hat: torch.Tensor
    ) -> tuple[torch.Tensor, AdversaryStats, torch.Tensor | None]:
        adversary = self.adversary
        if adversary is None or not adversary.active(self.steps_done) or not self.decoder_training:
            return rec, AdversaryStats(), None
        fakes = self._fakes(x_hat, adversary.options.fakes)
        gen = adversary.generator_loss(fakes)
        o = adversary.options
        weight = adaptive_weight(rec, gen, self._last_weight(), o.weight, o.max_weight)
        return rec + weight * gen, AdversaryStats(image_gen=gen.item(), image_weight=weight), fakes

    def _fakes(self, x_hat: torch.Tensor, kind: str) -> torch.Tensor:
        """Reconstructions, decoded prior samples (so the decoder trains where sampling goes), or both."""
        if kind == "recon":
            return x_hat
        decoded = self._decoded_prior(x_hat.shape[0] if kind == "prior" else max(x_hat.shape[0] // 2, 1))[0]
        return decoded if kind == "prior" else torch.cat([x_hat, decoded])

    def _decoded_prior(self, count: int) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """``count`` decoded prior samples for this step's added terms, with their labels and what those show.

        A conditional decoder gets other images' labels (the batch's, rolled by one): the training labels' joint
        distribution. Decoded once per step: the image adversary and the attribute teacher share the samples.
        """
        labels = None if self.condition is None else self.condition.roll(1, 0)[:count]
        visible = None if self.visible is None else self.visible.roll(1, 0)[:count]
        if self._prior_decodes is None or self._prior_decodes.shape[0] < count:
            self._prior_decodes = self.model.decoder(self.prior.sample(count, device=self.device), labels).float()
        return self._prior_decodes[:count], labels, visible

    def _added_phases(self, x: torch.Tensor, fakes: torch.Tensor | None, losses: StepLosses) -> StepLosses:
        """The added phases' own updates, after the model's: the image discriminator, then the attribute teacher."""
        if self.adversary is not None and fakes is not None:
            with self.autocast():
                losses = _with(losses, self.adversary.discriminator_step(x, fakes, self.steps_done))
        if self.teacher is not None and self.condition is not None and self.visible is not None:
            with self.autocast():
                losses = _with(losses, self.teacher.teacher_step(x, self.condition, self.visible))
        return losses

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"autoencoder": self.opt_autoencoder}

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs besides the data order and the RNGs: weights, optimizers, EMA, step."""
        return {
            "model": self.model.state_dict(),
            "optimizers": {name: opt.state_dict() for name, opt in self.optimizers().items()},
            "adversary": self.adversary.state_dict() if self.adversary else None,
            "teacher": self.teacher.state_dict() if self.teacher else None,
            "ema": self.ema.state_dict() if self.ema else None,
            "steps_done": self.steps_done,
            "images_before": self.images_before,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        for name, opt in self.optimizers().items():
            opt.load_state_dict(state["optimizers"][name])
        if self.adversary is not None:
            self.adversary.load_state_dict(state["adversary"])
        if self.teacher is not None:
            self.teacher.load_state_dict(state["teacher"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        self.steps_done = int(state["steps_done"])
        self.images_before = int(state.get("images_before", 0))

    def start_from(self, checkpoint: dict[str, Any], source: str | Path) -> None:
        """A fine-tune's start: the model's weights and the decoder's EMA from another run's ``checkpoint``.

        Its live training weights when it has them (else the exported ones); the optimizers and the step count
        start afresh, the EMA's warm-up ramp counts the images it had already averaged.
        """
        mine, theirs = self.model.config, AAEConfig.from_dict(checkpoint["config"])
        from_package = "started_from_package" in checkpoint
        # a package gives the decoder alone: the encoder (its posterior included) and the discriminator are new
        free = {"attributes", "posterior"} if from_package else {"attributes"}
        a, b = mine.to_dict(), theirs.to_dict()
        differ = sorted(k for k in set(a) | set(b) if k not in free and a.get(k) != b.get(k))
        if not mine.attribute_space.same_values(theirs.attribute_space):
            differ.append("attributes")  # the training labels' marginals may differ: they are the data's
        if differ:
            raise ValueError(f"{source}: another model than this run's (it differs in {', '.join(differ)})")
        state = (checkpoint.get("training_state") or {}).get("trainer")
        if from_package:
            prefix = "decoder."
            weights = {k.removeprefix(prefix): v for k, v in checkpoint["model"].items() if k.startswith(prefix)}
            self.model.decoder.load_state_dict(weights)
        else:
            self.model.load_state_dict(state["model"] if state else checkpoint["model"])
        if self.ema is not None:
            ema = state.get("ema") if state else checkpoint.get("decoder_ema")
            self.ema.load_state_dict(ema if ema is not None else self.model.decoder.state_dict())
            if ema is not None and state is not None:
                self.images_before = int(state.get("images_before", 0)) + int(state["steps_done"]) * int(
                    checkpoint["options"]["batch_size"]
                )


class AETrainer(Trainer):
    """The plain autoencoder baseline: the reconstruction phase alone; nothing shapes q(z)."""

    def _step(self, x: torch.Tensor) -> StepLosses:
        with self.autocast():
            loss, losses, fakes = self._decoder_loss(x, self.model.encoder(x))
        self._update(self.opt_autoencoder, loss)
        return self._added_phases(x, fakes, losses)


class VAETrainer(Trainer):
    """The VAE baseline: a Gaussian decoder of fixed sigma (``vae_sigma``) and the closed-form KL to N(0, s^2 I).

    Its likelihood is the MSE whatever ``recon_loss`` says; the image adversary can be added to it.
    """

    def _step(self, x: torch.Tensor) -> StepLosses:
        m = self.model
        s2 = self.prior.std**2
        with self.autocast():
            mu, logvar = m.encoder.distribution(x)
            assert logvar is not None
            mu, logvar = mu.float(), logvar.float()
            z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
            x_hat = m.decoder(z, self.condition).float()
            mse = F.mse_loss(x_hat, x, reduction="none").flatten(1).sum(1)
            kl = 0.5 * (math.log(s2) - logvar + (logvar.exp() + mu.pow(2)) / s2 - 1).sum(1)
            losses = StepLosses(mse.mean().item() / x[0].numel(), kl=kl.mean().item())
            loss, losses, fakes = self._added_terms((mse / (2 * self.options.vae_sigma**2) + kl).mean(), x_hat, losses)
        self._update(self.opt_autoencoder, loss)
        return self._added_phases(x, fakes, losses)


class AAETrainer(Trainer):
    """The AAE: a reconstruction phase, then a regularization phase, on every mini-batch."""

    def __init__(self, config: AAEConfig, options: TrainOptions, device: torch.device) -> None:
        super().__init__(config, options, device)
        m = self.model
        self.opt_discriminator = torch.optim.Adam(m.discriminator.parameters(), lr=options.lr_discriminator, betas=BETAS)
        self.opt_generator = torch.optim.Adam(m.encoder.parameters(), lr=options.lr_generator, betas=BETAS)
        weighted = options.prior_sliced_weight > 0
        self.prior_slicer = PriorSlicer(self.prior, config.latent_dim, device) if weighted else None

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        named = {**super().optimizers(), "discriminator": self.opt_discriminator}
        if not self.options.shared_encoder:
            named["generator"] = self.opt_generator
        return named

    def _step(self, x: torch.Tensor) -> StepLosses:
        return self._shared_step(x) if self.options.shared_encoder else self._phased_step(x)

    def _phased_step(self, x: torch.Tensor) -> StepLosses:
        """Reconstruction phase (with the image adversary's term), then the regularization phase."""
        m = self.model
        # Phase 1: reconstruction, encoder and decoder.
        with self.autocast():
            loss, losses, fakes = self._decoder_loss(x, m.encoder(x))
        self._update(self.opt_autoencoder, loss)

        # Phase 2a: the discriminator tells prior samples (label 1) from codes (label 0).
        with self.autocast(), torch.no_grad():
            z_fake = m.encoder(x).float()
        disc_loss, accuracy = self._latent_discriminator(z_fake)

        # Phase 2b: the encoder, as generator, learns to make its codes pass for prior samples.
        with self.autocast():
            z = m.encoder(x)
            logits_gen = m.discriminator(z, self.condition).float()
            gen_loss = F.binary_cross_entropy_with_logits(logits_gen, torch.ones_like(logits_gen))
        loss, sliced = self._with_prior_sliced(gen_loss, z)
        self._update(self.opt_generator, loss)
        losses = replace(losses, discriminator=disc_loss, generator=gen_loss.item(), disc_accuracy=accuracy, prior_sliced=sliced)
        return self._added_phases(x, fakes, losses)

    def _with_prior_sliced(self, gen_loss: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, float | None]:
        """The generator's loss with the sliced prior term of the codes added (float32, outside autocast), and the
        term's value to log; the loss alone, and None, without the term."""
        if self.prior_slicer is None:
            return gen_loss, None
        sliced = self.prior_slicer(z.float())
        return gen_loss + self.options.prior_sliced_weight * sliced, sliced.item()

    def state_dict(self) -> dict[str, Any]:
        slicer = self.prior_slicer
        return {**super().state_dict(), "prior_slicer": slicer.state_dict() if slicer else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        if self.prior_slicer is not None and state.get("prior_slicer") is not None:
            self.prior_slicer.load_state_dict(state["prior_slicer"])

    def _latent_discriminator(self, z_fake: torch.Tensor) -> tuple[float, float]:
        """``disc_steps`` updates on prior samples (label 1) against the codes (label 0); (loss, accuracy) of the last."""
        m = self.model
        for _ in range(self.options.disc_steps):
            with self.autocast():
                z_real = self.prior.sample(z_fake.shape[0], device=self.device)
                logits_real = m.discriminator(z_real, self.condition).float()
                logits_fake = m.discriminator(z_fake, self.condition).float()
                disc_loss = F.binary_cross_entropy_with_logits(
                    logits_real, torch.ones_like(logits_real)
                ) + F.binary_cross_entropy_with_logits(logits_fake, torch.zeros_like(logits_fake))
            self._update(self.opt_discriminator, disc_loss)
        accuracy = ((logits_real > 0).float().mean() + (logits_fake <= 0).float().mean()) / 2
        return disc_loss.item(), accuracy.item()

    def _shared_step(self, x: torch.Tensor) -> StepLosses:
        """One encoder forward and backward for both phases.

        The decoder side runs from a detached copy of the codes, which collects the reconstruction's gradient
        at z; the generator's gradient at z (through the just-updated discriminator) is scaled to
        ``gen_weight`` times its norm, and the sum goes back through the encoder once.
        """
        m = self.model
        with self.autocast():
            z = m.encoder(x).float()
        z_leaf = z.detach().requires_grad_(True)
        with self.autocast():
            loss, losses, fakes = self._decoder_loss(x, z_leaf)
        self.opt_autoencoder.zero_grad(set_to_none=True)
        loss.backward()
        g_rec = z_leaf.grad
        assert g_rec is not None
        disc_loss, accuracy = self._latent_discriminator(z.detach())
        m.discriminator.requires_grad_(False)
        with self.autocast():
            logits_gen = m.discriminator(z_leaf, self.condition).float()
            gen_loss = F.binary_cross_entropy_with_logits(logits_gen, torch.ones_like(logits_gen))
        loss, sliced = self._with_prior_sliced(gen_loss, z_leaf)
        (g_gen,) = torch.autograd.grad(loss, z_leaf)
        m.discriminator.requires_grad_(True)
        scale = self.options.gen_weight * float(g_rec.norm() / (g_gen.norm() + 1e-12))
        z.backward(g_rec + scale * g_gen)
        self.opt_autoencoder.step()
        losses = replace(
            losses,
            discriminator=disc_loss,
            generator=gen_loss.item(),
            disc_accuracy=accuracy,
            gen_weight=scale,
            prior_sliced=sliced,
        )
        return self._added_phases(x, fakes, losses)


TRAINERS: dict[str, type[Trainer]] = {"aae": AAETrainer, "ae": AETrainer, "vae": VAETrainer}


def build_trainer(config: AAEConfig, options: TrainOptions, device: torch.device) -> Trainer:
    return TRAINERS[config.kind](config, options, device)


@torch.no_grad()
def save_sample_grid(model: AAE, z: torch.Tensor, path: Path, condition: torch.Tensor | None = None) -> None:
    model.eval()
    images = images_uint8(model.decoder(z, condition)).cpu().numpy()
    model.train()
    image_grid(images, columns=8).save(path)


class LossWindow:
    """Means of the step losses since the last log line (one batch's accuracy alone is too noisy)."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.steps = 0

    def add(self, losses: StepLosses) -> None:
        self.steps += 1
        for key, value in asdict(losses).items():
            if value is not None:
                self.sums[key] = self.sums.get(key, 0.0) + value

    def flush(self) -> dict[str, float]:
        means = {key: total / max(self.steps, 1) for key, total in self.sums.items()}
        self.sums, self.steps = {}, 0
        return means


@torch.no_grad()
def recalibrate_batchnorm(
    model: AAE, data: torch.Tensor, batches: int = 50, batch_size: int = 64, conditions: torch.Tensor | None = None
) -> None:
    """Precise BatchNorm statistics (Wu & Johnson, 2021, "Rethinking Batch in BatchNorm").

    During training, each BatchNorm's running mean and variance is an exponential average over the
    last few dozen batches, taken while the weights (and so the codes) kept moving. Inference uses
    those statistics, so they lag behind the final weights. With the weights fixed, this re-estimates
    them as a plain average over ``batches`` training batches on the reconstruction path.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average
    was_training = model.training
    model.train()
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(0)
    batch_size = min(batch_size, data.shape[0])
    for _ in range(min(batches, 2 * math.ceil(data.shape[0] / batch_size))):  # at most twice over a small set
        idx = torch.randint(0, data.shape[0], (batch_size,), generator=generator)
        condition = None if conditions is None else conditions[idx.to(conditions.device)].to(device)
        model.decoder(model.encoder(data[idx.to(data.device)].to(device).float().div_(255)), condition)
    for norm, momentum in zip(norms, momenta, strict=True):
        norm.momentum = momentum
    model.train(was_training)


@dataclass
class Conditions:
    """A conditional run's labels, one row per training image."""

    one_hot: torch.Tensor  # [N, condition_dim]
    visible: torch.Tensor  # bool [N, attributes]: which labels each image shows (aae/labels.py's ``hidden``)


def _load_conditions(options: TrainOptions, device: torch.device) -> tuple[TrainOptions, Conditions | None]:
    """For a conditional run: the options with the data's attribute space in the config, and the labels."""
    if not options.conditional:
        return options, None
    table = load_labels(options.data, options.count, options.data_seed)
    if table is None:
        raise ValueError(f"{options.data}: a conditional model needs labels ({', '.join(LABEL_FILES)} beside the images)")
    space = table.space()
    config = replace(options.config, attributes=space.to_manifest())
    log.info("conditional on %d attributes (%d one-hot columns)", len(space.names), space.dim)
    one_hot = torch.from_numpy(space.one_hot(table.codes)).to(device)
    return replace(options, config=config), Conditions(one_hot, torch.from_numpy(table.visible()).to(device))


def _load_tensors(options: TrainOptions, device: torch.device) -> torch.Tensor:
    config = options.config
    images = load_dataset(options.data, options.count, config.image_size, options.data_seed, options.cache_dir)
    data = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()  # uint8 [N, C, H, W]
    if options.batch_size > data.shape[0]:
        raise ValueError(f"dataset has {data.shape[0]} images, fewer than batch_size={options.batch_size}")
    if device.type == "cuda" and data.numel() < 4 * 2**30:
        data = data.to(device)  # uint8 on the device: no host-to-device copy per step
    log.info("training a %s on %d images of %s on %s", config.kind, data.shape[0], options.data, device)
    return data


def train(options: TrainOptions, resume: str | Path | None = None) -> Path:
    """Train a model (an AAE, or a baseline, per ``options.config.kind``); return its final checkpoint.

    ``resume``: a checkpoint (or a run folder, for its ``checkpoint.pt``) of the same options to continue
    from: weights, optimizers, EMA, RNGs, data order and step, so the result equals an uninterrupted run.
    """
    if options.threads:
        torch.set_num_threads(options.threads)
    torch.manual_seed(options.seed)
    random.seed(options.seed)
    np.random.seed(options.seed % 2**32)
    device = pick_device(options.device)
    out = Path(options.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = _load_tensors(options, device)
    options, conditions = _load_conditions(options, device)
    if conditions is not None and conditions.one_hot.shape[0] != data.shape[0]:
        raise ValueError(f"{options.data}: {conditions.one_hot.shape[0]} labels for {data.shape[0]} images")
    loop = TrainingLoop(options, build_trainer(options.config, options, device), data, out, conditions)
    if resume is not None:
        loop.restore(read_checkpoint(resume_path(resume)))
    else:
        start_from(loop.trainer, options)
    with StopOnSignal() as stop:
        loop.run(stop)
    return out / "checkpoint.pt"


def start_from(trainer: Trainer, options: TrainOptions) -> None:
    """A fresh run's starting weights: a fine-tune's (``options.init``), and its teachers' (their own ``init``, else
    the fine-tuned run's teachers, else none)."""
    checkpoint = read_start(options.init, options.seed) if options.init else None
    if checkpoint is not None:
        assert options.init is not None
        trainer.start_from(checkpoint, options.init)
        log.info("fine-tuning %s", options.init)
    teacher = trainer.teacher
    if teacher is None:
        return
    if teacher.options.init:
        sources, weights = teacher.options.init, initial_teachers(teacher.options.init, teacher.space)
    elif checkpoint is not None and saved_teachers(checkpoint) is not None:
        sources, weights = (str(options.init),), teachers_in(checkpoint, str(options.init), teacher.space)
    else:
        return
    teacher.start_from(weights)
    log.info("the attribute teachers start from %s", ", ".join(sources))


def read_start(init: str | Path, seed: int = 0) -> dict[str, Any]:
    """A fine-tune's starting checkpoint: a run folder's or a .pt file's, or one rebuilt from a model package's decoder
    (aae/package_start.py; ``seed`` draws its fresh encoder and latent discriminator)."""
    if is_package(init):
        return package_checkpoint(init, seed)
    return read_checkpoint(resume_path(init))


def resume_path(resume: str | Path) -> Path:
    path = Path(resume)
    return path / "checkpoint.pt" if path.is_dir() else path


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    with torch.serialization.safe_globals([torch.torch_version.TorchVersion]):
        checkpoint: dict[str, Any] = torch.load(str(path), map_location="cpu", weights_only=True)
    return checkpoint


def resumable_options(path: str | Path) -> TrainOptions:
    """The options a run folder's (or checkpoint's) training used, to continue it."""
    checkpoint = read_checkpoint(resume_path(path))
    if "training_state" not in checkpoint:
        raise ValueError(f"{path}: the checkpoint has no training state to resume from (written before resumable runs)")
    return TrainOptions.from_dict(checkpoint["options"], AAEConfig.from_dict(checkpoint["config"]))


class StopOnSignal:
    """SIGTERM (and SIGINT) set a flag that the loop reads after each step: it checkpoints, then returns."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: object) -> None:
        log.warning("signal %d: checkpointing and stopping after this step", signum)
        self.requested = True

    def __enter__(self) -> StopOnSignal:
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(ValueError):  # not the main thread: no handlers, no clean stop
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _rng_state(generator: torch.Generator) -> dict[str, Any]:
    kind, key, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(np.asarray(key, dtype=np.int64)), int(pos), int(has_gauss), float(cached)],
        "python": random.getstate(),
        "data_order": generator.get_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any], generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    kind, key, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, key.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    generator.set_state(state["data_order"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _has_batchnorm(module: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())


class TrainingLoop:
    """The epochs and steps of one run, its logs, and its checkpoints (every epoch and every few minutes).

    A checkpoint holds what tools need (config, weights with precise BatchNorm statistics, the EMA decoder,
    the summary) and, under ``training_state``, the live state that ``restore`` continues from.
    """

    def __init__(
        self, options: TrainOptions, trainer: Trainer, data: torch.Tensor, out: Path, conditions: Conditions | None = None
    ) -> None:
        self.options, self.trainer, self.data, self.out = options, trainer, data, out
        self.conditions = conditions
        self.generator = torch.Generator().manual_seed(options.seed)
        self.fixed_z = trainer.prior.sample(64, generator=torch.Generator().manual_seed(1234)).to(trainer.device)
        space = options.config.attribute_space
        self.fixed_condition = (
            torch.from_numpy(space.one_hot(space.draw(1234, np.arange(64)))).to(trainer.device) if space else None
        )
        self.steps_per_epoch = data.shape[0] // options.batch_size
        total = options.epochs * self.steps_per_epoch
        self.total_steps = total if options.max_steps is None else min(total, options.max_steps)
        self.step, self.epoch, self.batch = 0, 0, 0
        self.order: torch.Tensor | None = None
        self.elapsed_before = 0.0  # seconds of the runs this one resumes
        self.started = time.monotonic()
        self.first_step = 0
        self.last_checkpoint = time.monotonic()
        self.window = LossWindow()
        self.last: dict[str, float] = {}

    def seconds(self) -> float:
        return self.elapsed_before + time.monotonic() - self.started

    def restore(self, checkpoint: dict[str, Any]) -> None:
        if "training_state" not in checkpoint:
            raise ValueError("the checkpoint has no training state to resume from (written before resumable runs)")
        state = checkpoint["training_state"]
        self.trainer.load_state_dict(state["trainer"])
        _set_rng_state(state["rng"], self.generator)
        self.step, self.epoch, self.batch = state["step"], state["epoch"], state["batch"]
        self.order = state["order"]
        self.elapsed_before = float(state["seconds"])
        self.last = dict(state.get("last") or {})
        self.first_step = self.step
        log.info("resuming at step %d (epoch %d, batch %d) of %d", self.step, self.epoch, self.batch, self.total_steps)

    def run(self, stop: StopOnSignal) -> None:
        with (
            open(self.out / "losses.jsonl", "a", encoding="utf-8") as log_file,
            tqdm(total=self.total_steps, initial=self.step, unit="step") as bar,
        ):
            while self.epoch < self.options.epochs and self.step < self.total_steps and not self._stopping(stop):
                self._epoch(log_file, bar, stop)
            if self.batch:  # stopped mid-epoch (max_steps or a signal): the last state is resumable from here
                self.save(epoch_end=False)

    def _epoch(self, log_file: Any, bar: tqdm[Any], stop: StopOnSignal) -> None:
        o = self.options
        if self.order is None:
            self.order = torch.randperm(self.data.shape[0], generator=self.generator).to(self.data.device)
        while self.batch < self.steps_per_epoch and self.step < self.total_steps and not self._stopping(stop):
            idx = self.order[self.batch * o.batch_size : (self.batch + 1) * o.batch_size]
            x = self.data[idx].to(self.trainer.device, non_blocking=True).float().div_(255)
            condition = visible = None
            if self.conditions is not None:
                rows = idx.to(self.conditions.one_hot.device)
                condition, visible = self.conditions.one_hot[rows], self.conditions.visible[rows]
            self.window.add(self.trainer.step(x, condition, visible))
            self.step, self.batch = self.step + 1, self.batch + 1
            bar.update(1)
            if self.step % o.log_every == 0 or self.step == self.total_steps:
                self._log(log_file, bar)
            if time.monotonic() - self.last_checkpoint > 60 * o.checkpoint_minutes:
                self.save(epoch_end=False)
        if self.batch == self.steps_per_epoch:
            self.save(epoch_end=True)
            self.epoch, self.batch, self.order = self.epoch + 1, 0, None

    def _stopping(self, stop: StopOnSignal) -> bool:
        """A signal, or the time budget spent."""
        budget = self.options.max_minutes
        return stop.requested or (budget is not None and self.seconds() >= 60 * budget)

    def _log(self, log_file: Any, bar: tqdm[Any]) -> None:
        seconds = self.seconds()
        self.last = self.window.flush()
        record = {"step": self.step, "epoch": self.epoch, **self.last, "seconds": seconds}
        this_run = time.monotonic() - self.started
        record["images_per_s"] = (self.step - self.first_step) * self.options.batch_size / max(this_run, 1e-9)
        log_file.write(json.dumps(record) + "\n")
        log_file.flush()
        shown = ("reconstruction", "disc_accuracy", "kl", "image_weight")
        bar.set_postfix({k: f"{v:.4f}" for k, v in self.last.items() if k in shown})

    def _tool_models(self) -> tuple[AAE, AAE | None]:
        """Copies of the model with precise BatchNorm statistics: the live one, and the one with the EMA decoder."""
        live = copy.deepcopy(self.trainer.model)
        conditions = None if self.conditions is None else self.conditions.one_hot
        recalibrate_batchnorm(live, self.data, batch_size=self.options.batch_size, conditions=conditions)
        ema = self.trainer.ema
        if ema is None:
            return live, None
        averaged = copy.deepcopy(live)
        averaged.decoder.load_state_dict(ema.state_dict())
        if _has_batchnorm(averaged.decoder):
            recalibrate_batchnorm(averaged, self.data, batch_size=self.options.batch_size, conditions=conditions)
        return live, averaged

    def save(self, epoch_end: bool) -> None:
        """checkpoint.pt (and, at an epoch's end, checkpoint_epochNNN.pt and a sample grid), written atomically."""
        live, averaged = self._tool_models()
        use_ema = averaged is not None and self.options.export_ema
        shipped = averaged if use_ema and averaged is not None else live
        epochs = self.epoch + 1 if epoch_end else self.epoch
        summary = _summary(self.options, self.trainer.device, self.data.shape[0], self.step, epochs, self.seconds(), self.last)
        summary["export_decoder"] = "ema" if use_ema else "live"
        state = {
            "trainer": self.trainer.state_dict(),
            "rng": _rng_state(self.generator),
            "step": self.step,
            "epoch": self.epoch + 1 if epoch_end else self.epoch,
            "batch": 0 if epoch_end else self.batch,
            "order": None if epoch_end else self.order,
            "seconds": self.seconds(),
            "last": self.last,
        }
        checkpoint = {
            "config": live.config.to_dict(),
            "model": _contiguous(live.state_dict()),
            "decoder_ema": _contiguous(averaged.decoder.state_dict()) if averaged is not None else None,
            "summary": summary,
            "options": self.options.to_dict(),
            "training_state": state,
        }
        if epoch_end:
            save_sample_grid(shipped, self.fixed_z, self.out / f"samples_epoch{self.epoch:03d}.png", self.fixed_condition)
            _atomic_save(checkpoint, self.out / f"checkpoint_epoch{self.epoch:03d}.pt")
        _atomic_save(checkpoint, self.out / "checkpoint.pt")  # the latest
        self.last_checkpoint = time.monotonic()
        log.info("checkpoint at step %d (%s)", self.step, "end of epoch" if epoch_end else "mid-epoch")


def _contiguous(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.contiguous() for k, v in state.items()}


def _atomic_save(checkpoint: dict[str, Any], path: Path) -> None:
    with atomic_file(path) as f:  # a crash mid-write never leaves a truncated checkpoint
        torch.save(checkpoint, f)


def _summary(
    options: TrainOptions, device: torch.device, n_images: int, steps: int, epochs: int, seconds: float, last: dict[str, float]
) -> dict[str, Any]:
    return {
        "data": options.data,
        "data_seed": options.data_seed,
        "images": n_images,
        "epochs": epochs,
        "steps": steps,
        "batch_size": options.batch_size,
        "seconds": round(seconds, 1),
        "kind": options.config.kind,
        "prior_sliced_weight": options.prior_sliced_weight,
        "device": str(device),
        "final_losses": last or None,
        "torch": str(torch.__version__),
        "numpy": np.__version__,
    }
