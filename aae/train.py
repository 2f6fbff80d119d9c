"""Training loop of the AAE: per mini-batch, a reconstruction phase and then a regularization phase.

Phase 1 (reconstruction): encoder and decoder minimise the reconstruction error.
Phase 2 (regularization): the discriminator learns to tell prior samples from encoder codes, then the
encoder is updated to fool it, which pushes the aggregated posterior q(z) onto the prior p(z).
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from aae.data import image_grid, load_dataset
from aae.model import AAE, AAEConfig, images_uint8
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
    lr_discriminator: float = 2e-4
    lr_generator: float = 2e-4
    seed: int = 0
    data_seed: int = 0
    out_dir: str = "runs/aae"
    cache_dir: str = "cache"
    device: str = "auto"
    max_steps: int | None = None  # stop early, for smoke tests
    log_every: int = 25
    threads: int | None = None
    amp: bool = True  # bfloat16 autocast when training on CUDA; ignored on CPU
    vae_sigma: float = 0.1  # the VAE baseline's decoder standard deviation (pixel values in [0, 1])
    config: AAEConfig = field(default_factory=AAEConfig)


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


class Trainer:
    """Owns the model and its optimizers; ``step`` is one mini-batch update. Subclasses per kind."""

    def __init__(self, config: AAEConfig, options: TrainOptions, device: torch.device) -> None:
        self.device = device
        self.options = options
        self.model = AAE(config).to(device)
        self.prior = build_prior(config.prior, config.latent_dim)
        # bfloat16 autocast on CUDA: no loss scaling needed, and the losses are computed in float32
        self.amp = options.amp and device.type == "cuda"
        m = self.model
        self.opt_autoencoder = torch.optim.Adam(
            list(m.encoder.parameters()) + list(m.decoder.parameters()), lr=options.lr_reconstruction, betas=BETAS
        )

    def autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp)

    def _update(self, optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def step(self, x: torch.Tensor) -> StepLosses:
        raise NotImplementedError


class AETrainer(Trainer):
    """The plain autoencoder baseline: the reconstruction phase alone; nothing shapes q(z)."""

    def step(self, x: torch.Tensor) -> StepLosses:
        m = self.model
        with self.autocast():
            reconstruction = F.mse_loss(m.decoder(m.encoder(x)), x)
        self._update(self.opt_autoencoder, reconstruction)
        return StepLosses(reconstruction.item())


class VAETrainer(Trainer):
    """The VAE baseline: a Gaussian decoder of fixed sigma (``vae_sigma``) and the closed-form KL to N(0, s^2 I)."""

    def step(self, x: torch.Tensor) -> StepLosses:
        m = self.model
        s2 = self.prior.std**2
        with self.autocast():
            mu, logvar = m.encoder.distribution(x)
            assert logvar is not None
            mu, logvar = mu.float(), logvar.float()
            z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
            mse = F.mse_loss(m.decoder(z).float(), x, reduction="none").flatten(1).sum(1)
            kl = 0.5 * (math.log(s2) - logvar + (logvar.exp() + mu.pow(2)) / s2 - 1).sum(1)
            loss = (mse / (2 * self.options.vae_sigma**2) + kl).mean()
        self._update(self.opt_autoencoder, loss)
        return StepLosses(mse.mean().item() / x[0].numel(), kl=kl.mean().item())


class AAETrainer(Trainer):
    """The AAE: a reconstruction phase, then a regularization phase, on every mini-batch."""

    def __init__(self, config: AAEConfig, options: TrainOptions, device: torch.device) -> None:
        super().__init__(config, options, device)
        m = self.model
        self.opt_discriminator = torch.optim.Adam(m.discriminator.parameters(), lr=options.lr_discriminator, betas=BETAS)
        self.opt_generator = torch.optim.Adam(m.encoder.parameters(), lr=options.lr_generator, betas=BETAS)

    def step(self, x: torch.Tensor) -> StepLosses:
        """One mini-batch: reconstruction phase, then regularization phase."""
        m = self.model
        B = x.shape[0]  # batch
        # Phase 1: reconstruction, encoder and decoder.
        with self.autocast():
            reconstruction = F.mse_loss(m.decoder(m.encoder(x)), x)
        self._update(self.opt_autoencoder, reconstruction)

        # Phase 2a: the discriminator tells prior samples (label 1) from codes (label 0).
        with self.autocast():
            with torch.no_grad():
                z_fake = m.encoder(x).float()
            z_real = self.prior.sample(B, device=self.device)
            logits_real, logits_fake = m.discriminator(z_real).float(), m.discriminator(z_fake).float()
            disc_loss = F.binary_cross_entropy_with_logits(
                logits_real, torch.ones_like(logits_real)
            ) + F.binary_cross_entropy_with_logits(logits_fake, torch.zeros_like(logits_fake))
        self._update(self.opt_discriminator, disc_loss)

        # Phase 2b: the encoder, as generator, learns to make its codes pass for prior samples.
        with self.autocast():
            logits_gen = m.discriminator(m.encoder(x)).float()
            gen_loss = F.binary_cross_entropy_with_logits(logits_gen, torch.ones_like(logits_gen))
        self._update(self.opt_generator, gen_loss)

        accuracy = ((logits_real > 0).float().mean() + (logits_fake <= 0).float().mean()) / 2
        return StepLosses(reconstruction.item(), disc_loss.item(), gen_loss.item(), accuracy.item())


TRAINERS: dict[str, type[Trainer]] = {"aae": AAETrainer, "ae": AETrainer, "vae": VAETrainer}


def build_trainer(config: AAEConfig, options: TrainOptions, device: torch.device) -> Trainer:
    return TRAINERS[config.kind](config, options, device)


def save_checkpoint(path: Path, model: AAE, summary: dict[str, Any], options: TrainOptions) -> None:
    checkpoint = {
        "config": model.config.to_dict(),
        "model": model.state_dict(),
        "summary": summary,
        "options": {k: v for k, v in asdict(options).items() if k != "config"},
    }
    with atomic_file(path) as f:  # a crash mid-write never leaves a truncated checkpoint
        torch.save(checkpoint, f)


@torch.no_grad()
def save_sample_grid(model: AAE, z: torch.Tensor, path: Path) -> None:
    model.eval()
    images = images_uint8(model.decoder(z)).cpu().numpy()
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
def recalibrate_batchnorm(model: AAE, data: torch.Tensor, batches: int = 50, batch_size: int = 64) -> None:
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
        model.decoder(model.encoder(data[idx.to(data.device)].to(device).float().div_(255)))
    for norm, momentum in zip(norms, momenta, strict=True):
        norm.momentum = momentum
    model.train(was_training)


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


def train(options: TrainOptions) -> Path:
    """Train a model (an AAE, or a baseline, per ``options.config.kind``); return its final checkpoint."""
    if options.threads:
        torch.set_num_threads(options.threads)
    torch.manual_seed(options.seed)
    device = pick_device(options.device)
    out = Path(options.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = _load_tensors(options, device)
    N = data.shape[0]
    trainer = build_trainer(options.config, options, device)
    fixed_z = trainer.prior.sample(64, generator=torch.Generator().manual_seed(1234)).to(device)
    generator = torch.Generator().manual_seed(options.seed)
    steps_per_epoch = N // options.batch_size
    total_steps = options.epochs * steps_per_epoch
    if options.max_steps is not None:
        total_steps = min(total_steps, options.max_steps)

    started = time.monotonic()
    step = 0
    window = LossWindow()
    last: dict[str, float] = {}
    with open(out / "losses.jsonl", "a", encoding="utf-8") as log_file, tqdm(total=total_steps, unit="step") as bar:
        for epoch in range(options.epochs):
            order = torch.randperm(N, generator=generator).to(data.device)
            for b in range(min(steps_per_epoch, total_steps - step)):
                idx = order[b * options.batch_size : (b + 1) * options.batch_size]
                window.add(trainer.step(data[idx].to(device, non_blocking=True).float().div_(255)))
                step += 1
                bar.update(1)
                if step % options.log_every == 0 or step == total_steps:
                    seconds = time.monotonic() - started
                    last = window.flush()
                    record = {"step": step, "epoch": epoch, **last, "seconds": seconds}
                    record["images_per_s"] = step * options.batch_size / max(seconds, 1e-9)
                    log_file.write(json.dumps(record) + "\n")
                    log_file.flush()
                    bar.set_postfix({k: f"{v:.4f}" for k, v in last.items() if k in ("reconstruction", "disc_accuracy", "kl")})
            recalibrate_batchnorm(trainer.model, data, batch_size=options.batch_size)
            save_sample_grid(trainer.model, fixed_z, out / f"samples_epoch{epoch:03d}.png")
            summary = _summary(options, device, N, step, epoch + 1, time.monotonic() - started, last)
            save_checkpoint(out / f"checkpoint_epoch{epoch:03d}.pt", trainer.model, summary, options)
            save_checkpoint(out / "checkpoint.pt", trainer.model, summary, options)  # the latest
            if step >= total_steps:
                break
    return out / "checkpoint.pt"


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
        "device": str(device),
        "final_losses": last or None,
        "torch": str(torch.__version__),
        "numpy": np.__version__,
    }
