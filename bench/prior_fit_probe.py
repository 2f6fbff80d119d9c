"""How well a training checkpoint's codes fit the prior, and how close its samples are to real faces, before any
export: the card's prior fit (MMD^2 with its permutation test, per-dimension KS) on posterior samples and on mean
codes of held-out faces, the spread of the mean codes (the eigenvalues of their covariance: a prior of identity
covariance wants them all near 1), a classifier two-sample test (Lopez-Paz & Oquab, 2017: a fresh MLP of the latent
discriminator's shape trained to tell codes from prior samples, its accuracy on codes and samples it did not train
on; 0.5 when they match), and the card's sample SWD of the decoder the checkpoint ships.

    python -m bench.prior_fit_probe runs/a/checkpoint.pt runs/b/checkpoint.pt --out bench/results/x/probe.jsonl

One JSON line per checkpoint; used to rank the latent game's variants on one budget.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aae.evaluate import EvalSizes, codes_prior_fit, load_eval_data
from aae.generators import CheckpointGenerator
from aae.metrics import sliced_wasserstein
from aae.model import AAEConfig, LatentDiscriminator


def code_spread(codes: np.ndarray) -> dict[str, float]:
    """The smallest and largest eigenvalue of the codes' covariance."""
    eigenvalues = np.linalg.eigvalsh(np.cov(codes.T))
    return {"min": round(float(eigenvalues[0]), 4), "max": round(float(eigenvalues[-1]), 4)}


def classifier_two_sample_test(codes: np.ndarray, prior: np.ndarray, steps: int = 300, seed: int = 0) -> float:
    """Held-out accuracy of a fresh latent discriminator (unconditional, of the default width) telling codes from
    prior samples: trained on three quarters of each, tested on the rest."""
    torch.manual_seed(seed)
    a, b = torch.from_numpy(codes).float(), torch.from_numpy(prior).float()
    cut_a, cut_b = 3 * len(a) // 4, 3 * len(b) // 4
    net = LatentDiscriminator(AAEConfig(latent_dim=a.shape[1]))
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-4, betas=(0.5, 0.999))
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        fake = a[torch.randint(0, cut_a, (64,), generator=generator)]
        real = b[torch.randint(0, cut_b, (64,), generator=generator)]
        logits = net(torch.cat([real, fake]))
        target = torch.cat([torch.ones(64), torch.zeros(64)])
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        right = ((net(b[cut_b:]) > 0).float().mean() + (net(a[cut_a:]) <= 0).float().mean()) / 2
    return round(float(right), 4)


def probe(checkpoint: str, cache_dir: str, swd_images: int) -> dict[str, Any]:
    sizes = EvalSizes().fitted(max(2 * swd_images, 1000))
    generator = CheckpointGenerator(checkpoint)
    data = load_eval_data(generator, sizes, cache_dir=cache_dir)
    faces = data.held_out[: sizes.prior_codes]
    draws = generator.encode(faces, sample=True, seed=sizes.seed)  # the card's codes (aae.evaluate.prior_fit_metrics)
    means = generator.encode(faces)
    sampled, mean_fit = codes_prior_fit(generator, draws, sizes), codes_prior_fit(generator, means, sizes)
    prior = generator.sample_z(len(means), sizes.seed + 1)
    c2st = {
        "posterior_samples": classifier_two_sample_test(draws, prior),
        "mean_codes": classifier_two_sample_test(means, prior),
    }
    samples = generator.decode(generator.sample_inputs(sizes.swd, sizes.seed))
    swd = sliced_wasserstein(samples, data.held_out[: sizes.swd], per_image=sizes.patches, seed=sizes.seed)
    keys = ("mmd2", "p_value", "ks_max", "ks_mean")
    return {
        "checkpoint": checkpoint,
        "prior_fit": {"codes_are": generator.codes_description(sample=True), **{k: sampled[k] for k in keys}},
        "prior_fit_mean_codes": {k: mean_fit[k] for k in keys},
        "mean_code_covariance_eigenvalues": code_spread(means.astype(np.float64)),
        "classifier_two_sample_accuracy": c2st,
        "sample_swd_x1e3": {"per_level": [round(v, 2) for v in swd.per_level], "average": round(swd.average, 2)},
        "images": sizes.swd,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+", help="checkpoints written by synthgen train")
    parser.add_argument("--cache-dir", default="cache")
    parser.add_argument("--swd-images", type=int, default=2048, help="samples against as many held-out faces")
    parser.add_argument("--out", default=None, help="append the JSON lines to this file too")
    args = parser.parse_args(argv)
    for checkpoint in args.checkpoints:
        line = json.dumps(probe(checkpoint, args.cache_dir, args.swd_images))
        print(line, flush=True)
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            with open(args.out, "a", encoding="utf-8") as f:
                f.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
