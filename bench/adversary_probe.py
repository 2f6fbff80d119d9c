"""Can a fresh image discriminator tell a checkpoint's faces from real ones? A probe for a collapsed adversary.

It trains a new ``PatchDiscriminator`` (the image adversary's, with its hinge loss and lazy R1) for ``--steps``
mini-batches against the checkpoint's frozen decoder: real training faces against their reconstructions and
decoded prior samples, the adversary's ``both`` fakes. If its hinge loss falls well below 2 here while the
training run's ``image_disc`` stays at 2.000, the decoder was not indistinguishable: the discriminator lost
the race against a decoder that moved faster than it could follow.

    python -m bench.adversary_probe runs/v3/checkpoint.pt --lr 2e-4 --steps 150
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

from aae.data import load_dataset
from aae.image_adversary import AdversaryOptions, ImageAdversary
from aae.labels import load_labels
from aae.model import load_checkpoint
from aae.priors import build_prior


def probe(checkpoint: str, lr: float, steps: int, cache_dir: str, seed: int = 0) -> list[tuple[int, float, float, float]]:
    """(step, hinge loss, accuracy on reals, accuracy on fakes) every 25 steps."""
    model, ckpt = load_checkpoint(checkpoint, decoder="live")
    model.eval()
    options = ckpt["options"]
    data = load_dataset(options["data"], options["count"], model.config.image_size, options["data_seed"], cache_dir)
    space = model.config.attribute_space
    conditions = None
    if space:
        table = load_labels(options["data"], options["count"], options["data_seed"])
        assert table is not None
        conditions = torch.from_numpy(space.one_hot(table.codes))
    prior = build_prior(model.config.prior, model.config.latent_dim)  # the model's own prior, a mixture too
    adversary = ImageAdversary(AdversaryOptions(lr=lr), model.config.channels, torch.device("cpu"), (0.5, 0.999))
    rng, out = np.random.default_rng(seed), []
    for step in range(steps):
        idx = np.sort(rng.choice(len(data), 64, replace=False))
        x = torch.from_numpy(np.ascontiguousarray(data[idx])).permute(0, 3, 1, 2).float() / 255
        y = None if conditions is None else conditions[idx]
        with torch.no_grad():
            recon = model.decoder(model.encoder(x), y).float()
            z = prior.sample(32, generator=torch.Generator().manual_seed(seed + step))
            decoded = model.decoder(z, None if y is None else y.roll(1, 0)[:32]).float()
        stats = adversary.discriminator_step(x, torch.cat([recon, decoded]), step)
        if step % 25 == 24:
            assert stats.image_disc is not None and stats.image_real_accuracy is not None
            assert stats.image_fake_accuracy is not None
            out.append((step + 1, stats.image_disc, stats.image_real_accuracy, stats.image_fake_accuracy))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("--lr", type=float, default=2e-4, help="the discriminator's learning rate")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cache-dir", default="cache")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print("step  hinge loss  accuracy on reals  on fakes")
    for step, loss, real, fake in probe(args.checkpoint, args.lr, args.steps, args.cache_dir):
        print(f"{step:4d}  {loss:10.3f}  {real:17.2f}  {fake:8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
