"""Training loop of the AAE: per mini-batch, a reconstruction phase and then a regularization phase.

Phase 1 (reconstruction): encoder and decoder minimise the reconstruction error.
Phase 2 (regularization): the discriminator learns to tell prior samples from encoder codes, then the
encoder is updated to fool it, which pushes the aggregated posterior q(z) onto the prior p(z).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from aae.data import image_grid, load_dataset
from aae.model import AAE, AAEConfig
from aae.priors import build_prior

log = logging.getLogger(__name__)


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
    config: AAEConfig = field(default_factory=AAEConfig)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@dataclass
class StepLosses:
    reconstruction: float
    discriminator: float
    generator: float
    disc_accuracy: float  # fraction of prior and encoder codes the discriminator classifies right


class AAETrainer:
    """Owns the model, its three optimizers and the two-phase update."""

    def __init__(self, config: AAEConfig, options: TrainOptions, device: torch.device) -> None:
        self.device = device
        self.model = AAE(config).to(device)
        self.prior = build_prior(config.prior, config.latent_dim)
        m = self.model
        betas = (0.5, 0.999)
        self.opt_autoencoder = torch.optim.Adam(
            list(m.encoder.parameters()) + list(m.decoder.parameters()), lr=options.lr_reconstruction, betas=betas
        )
        self.opt_discriminator = torch.optim.Adam(m.discriminator.parameters(), lr=options.lr_discriminator, betas=betas)
        self.opt_generator = torch.optim.Adam(m.encoder.parameters(), lr=options.lr_generator, betas=betas)

    def step(self, x: torch.Tensor) -> StepLosses:
        """One mini-batch: reconstruction phase, then regularization phase."""
        m = self.model
        B = x.shape[0]  # batch
        # Phase 1: reconstruction, encoder and decoder.
        reconstruction = F.mse_loss(m.decoder(m.encoder(x)), x)
        self.opt_autoencoder.zero_grad(set_to_none=True)
        reconstruction.backward()
        self.opt_autoencoder.step()

        # Phase 2a: the discriminator tells prior samples (label 1) from codes (label 0).
        with torch.no_grad():
            z_fake = m.encoder(x)
        z_real = self.prior.sample(B, device=self.device)
        logits_real, logits_fake = m.discriminator(z_real), m.discriminator(z_fake)
        disc_loss = F.binary_cross_entropy_with_logits(
            logits_real, torch.ones_like(logits_real)
        ) + F.binary_cross_entropy_with_logits(logits_fake, torch.zeros_like(logits_fake))
        self.opt_discriminator.zero_grad(set_to_none=True)
        disc_loss.backward()
        self.opt_discriminator.step()

        # Phase 2b: the encoder, as generator, learns to make its codes pass for prior samples.
        logits_gen = m.discriminator(m.encoder(x))
        gen_loss = F.binary_cross_entropy_with_logits(logits_gen, torch.ones_like(logits_gen))
        self.opt_generator.zero_grad(set_to_none=True)
        gen_loss.backward()
        self.opt_generator.step()

        accuracy = ((logits_real > 0).float().mean() + (logits_fake <= 0).float().mean()) / 2
        return StepLosses(reconstruction.item(), disc_loss.item(), gen_loss.item(), accuracy.item())


def save_checkpoint(path: Path, model: AAE, summary: dict[str, Any], options: TrainOptions) -> None:
    checkpoint = {
        "config": model.config.to_dict(),
        "model": model.state_dict(),
        "summary": summary,
        "options": {k: v for k, v in asdict(options).items() if k != "config"},
    }
    tmp = path.with_suffix(".tmp")
    torch.save(checkpoint, tmp)
    tmp.replace(path)  # a crash mid-write never leaves a truncated checkpoint


@torch.no_grad()
def save_sample_grid(model: AAE, z: torch.Tensor, path: Path) -> None:
    model.eval()
    images = model.decoder(z).mul(255).round().clamp(0, 255).byte().permute(0, 2, 3, 1).cpu().numpy()
    model.train()
    image_grid(images, columns=8).save(path)


def train(options: TrainOptions) -> Path:
    """Train an AAE and return the path of its final checkpoint."""
    if options.threads:
        torch.set_num_threads(options.threads)
    torch.manual_seed(options.seed)
    device = pick_device(options.device)
    config = options.config
    out = Path(options.out_dir)
    out.mkdir(parents=True, exist_ok=True)

    images = load_dataset(options.data, options.count, config.image_size, options.data_seed, options.cache_dir)
    data = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()  # uint8 [N, C, H, W]
    N = data.shape[0]
    if options.batch_size > N:
        raise ValueError(f"dataset has {N} images, fewer than batch_size={options.batch_size}")
    log.info("training on %d images of %s on %s", N, options.data, device)

    trainer = AAETrainer(config, options, device)
    fixed_z = trainer.prior.sample(64, generator=torch.Generator().manual_seed(1234)).to(device)
    generator = torch.Generator().manual_seed(options.seed)
    steps_per_epoch = N // options.batch_size
    total_steps = options.epochs * steps_per_epoch
    if options.max_steps is not None:
        total_steps = min(total_steps, options.max_steps)

    started = time.monotonic()
    step = 0
    last: StepLosses | None = None
    with open(out / "losses.jsonl", "a", encoding="utf-8") as log_file, tqdm(total=total_steps, unit="step") as bar:
        for epoch in range(options.epochs):
            order = torch.randperm(N, generator=generator)
            for b in range(steps_per_epoch):
                if step >= total_steps:
                    break
                idx = order[b * options.batch_size : (b + 1) * options.batch_size]
                x = data[idx].to(device, non_blocking=True).float().div_(255)
                last = trainer.step(x)
                step += 1
                bar.update(1)
                if step % options.log_every == 0 or step == total_steps:
                    record = {"step": step, "epoch": epoch, **asdict(last), "seconds": time.monotonic() - started}
                    log_file.write(json.dumps(record) + "\n")
                    log_file.flush()
                    bar.set_postfix(rec=f"{last.reconstruction:.4f}", d_acc=f"{last.disc_accuracy:.2f}")
            save_sample_grid(trainer.model, fixed_z, out / f"samples_epoch{epoch:03d}.png")
            summary = _summary(options, N, step, epoch + 1, time.monotonic() - started, last)
            save_checkpoint(out / f"checkpoint_epoch{epoch:03d}.pt", trainer.model, summary, options)
            save_checkpoint(out / "checkpoint.pt", trainer.model, summary, options)  # the latest
            if step >= total_steps:
                break
    return out / "checkpoint.pt"


def _summary(
    options: TrainOptions, n_images: int, steps: int, epochs: int, seconds: float, last: StepLosses | None
) -> dict[str, Any]:
    return {
        "data": options.data,
        "data_seed": options.data_seed,
        "images": n_images,
        "epochs": epochs,
        "steps": steps,
        "batch_size": options.batch_size,
        "seconds": round(seconds, 1),
        "final_losses": asdict(last) if last else None,
        "torch": str(torch.__version__),
        "numpy": np.__version__,
    }
