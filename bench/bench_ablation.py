"""Ablation of the sharper recipe: each variant trains on the same avatars, seed and wall-clock budget, then
is scored by the card's SWD protocol on held-out faces.

Scores per variant (SWD x10^3 per Laplacian level, 64/32/16 px, and on average):

- sample SWD: decode(prior samples) against held-out set A (the card's number);
- reconstruction SWD: decode(encode(held-out set B)) against held-out set A, which isolates the decoder's
  sharpness from the mismatch between the codes and the prior;
- the floor: held-out set B against set A;
- reconstruction MSE of held-out faces, the latent discriminator's accuracy at the end (mean of the last
  100 steps), and the training images/s.

Each run also leaves a 64-sample grid and a reconstruction grid in the output folder: judge them by eye as
well, since patch statistics can improve while faces get worse. Everything runs on one thread.

    python -m bench.bench_ablation                           # variants a-d, 7 minutes each
    python -m bench.bench_ablation --variants a,c --minutes 2
    python -m bench.bench_ablation --score-only              # re-score the runs already in --runs
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aae.data import image_grid
from aae.evaluate import EvalData, EvalSizes, load_eval_data, reconstruction_inputs
from aae.generators import CheckpointGenerator
from aae.metrics import sliced_wasserstein
from synthgen.cli import main as synthgen

V3_DECODER = ["--upsample", "nearest", "--decoder-norm", "group", "--recon-loss", "laplacian", "--bf16", "--channels-last"]
ADVERSARY = ["--image-adversary", "--adv-fakes", "both", "--adv-start", "150", "--ema-kimg", "10"]
EQUILIBRIUM = ["--lr-discriminator", "1e-4", "--lr-generator", "4e-4"]
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "a": ("the current recipe (ConvTranspose + BatchNorm, MSE, fp32)", []),
    "b": ("resize-conv + GroupNorm + Laplacian L1, bf16, channels_last", V3_DECODER),
    "c": ("b + patch adversary on reconstructions and prior samples + decoder EMA", V3_DECODER + ADVERSARY),
    "d": ("c + latent game toward equilibrium (discriminator lr 1e-4, generator lr 4e-4)", V3_DECODER + ADVERSARY + EQUILIBRIUM),
    "e": (
        "a's decoder (ConvTranspose + BatchNorm, MSE) + bf16, channels_last + patch adversary on reconstructions and prior samples + decoder EMA",
        ["--bf16", "--channels-last", *ADVERSARY],
    ),
    "f": (
        "c's game with one shared encoder forward (generator gradient 0.5x the reconstruction's, discriminator lr 1e-4)",
        [*V3_DECODER, *ADVERSARY, "--lr-discriminator", "1e-4", "--shared-encoder", "--gen-weight", "0.5"],
    ),
    "g": (
        "e + d's latent game, with R1 on each image's mean patch logit (gamma 0.1)",
        ["--bf16", "--channels-last", *ADVERSARY, *EQUILIBRIUM, "--r1-gamma", "0.1"],
    ),
}
DEFAULT_VARIANTS = "a,b,c,d,e"
FLOORS: dict[tuple[int, int], dict[str, Any]] = {}  # (held-out start, images) -> the floor SWD, measured once


def _floor(data: EvalData, n: int) -> dict[str, Any]:
    key = (int(data.description["train_images"]), n)
    if key not in FLOORS:
        FLOORS[key] = _swd(data.held_out[n : 2 * n], data.held_out[:n])
    return FLOORS[key]


def train_variant(name: str, args: argparse.Namespace) -> Path:
    out = Path(args.runs) / name
    if out.exists():
        for stale in out.glob("*"):
            stale.unlink()
    argv = ["train", "--data", "avatars", "--count", str(args.count), "--epochs", "1000", "--seed", "0", "--data-seed", "0"]
    argv += ["--threads", "1", "--max-minutes", str(args.minutes), "--checkpoint-minutes", "1000", "--out", str(out)]
    argv += ["--cache-dir", args.cache_dir, *VARIANTS[name][1]]
    if synthgen(argv) != 0:
        raise RuntimeError(f"variant {name}: training failed")
    return out / "checkpoint.pt"


def _swd(a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
    result = sliced_wasserstein(a, b, per_image=128, seed=0)
    return {"per_level_x1e3": [round(v, 1) for v in result.per_level], "average_x1e3": round(result.average, 1)}


def _training_stats(run: Path, summary: dict[str, Any]) -> dict[str, Any]:
    records = [json.loads(line) for line in (run / "losses.jsonl").read_text().splitlines()]
    tail = records[-4:]  # the last 100 steps (log_every 25)

    def mean(key: str) -> float | None:
        values = [r[key] for r in tail if key in r]
        return round(float(np.mean(values)), 4) if values else None

    images = summary["steps"] * summary["batch_size"]
    return {
        "steps": summary["steps"],
        "images_seen": images,
        "seconds": summary["seconds"],
        "images_per_s": round(images / max(summary["seconds"], 1e-9), 1),
        "latent_disc_accuracy": mean("disc_accuracy"),
        "train_reconstruction_mse": mean("reconstruction"),
        "image_weight": mean("image_weight"),
        "image_real_accuracy": mean("image_real_accuracy"),
        "image_fake_accuracy": mean("image_fake_accuracy"),
        "image_frozen": mean("image_frozen"),
        "export_decoder": summary.get("export_decoder", "live"),
    }


def score(name: str, run: Path, out: Path, cache_dir: str, checkpoint: str = "checkpoint.pt") -> dict[str, Any]:
    generator = CheckpointGenerator(run / checkpoint)
    sizes = EvalSizes().fitted(4096)
    data = load_eval_data(generator, sizes, cache_dir=cache_dir)
    n = sizes.swd
    a, b = data.held_out[:n], data.held_out[n : 2 * n]
    samples = generator.decode(generator.sample_inputs(n, sizes.seed))
    condition = None if data.held_out_condition is None else data.held_out_condition[n : 2 * n]
    reconstructions = generator.decode(reconstruction_inputs(generator, b, condition))  # a conditional model: b's own labels
    image_grid(samples[:64], columns=8).save(out / f"{name}_samples.png")
    pairs = np.stack([b[:32], reconstructions[:32]], axis=1).reshape(64, *b.shape[1:])
    image_grid(pairs, columns=8).save(out / f"{name}_reconstructions.png")
    return {
        "variant": name,
        "description": VARIANTS[name][0],
        "flags": VARIANTS[name][1],
        "sample_swd": _swd(samples, a),
        "reconstruction_swd": _swd(reconstructions, a),
        "floor_swd": _floor(data, n),
        "heldout_reconstruction_mse": round(float(((reconstructions.astype(np.float64) - b) / 255.0).__pow__(2).mean()), 5),
        **_training_stats(run, generator.training),
    }


def _levels(swd: dict[str, Any]) -> str:
    return "/".join(f"{v:.0f}" for v in swd["per_level_x1e3"]) + f" → **{swd['average_x1e3']:.1f}**"


def write_report(results: list[dict[str, Any]], out: Path, minutes: float, count: int) -> None:
    for key in ("sample_swd", "reconstruction_swd"):
        order = sorted(results, key=lambda r: r[key]["average_x1e3"])
        for rank, r in enumerate(order, 1):
            r[f"rank_{key}"] = rank
    floor = results[0]["floor_swd"]
    lines = [
        "# Ablation: the sharper recipe for avatars-64 v3",
        "",
        f"Each variant: {count} avatars (seed 0) at 64 px, training seed 0, batch 64, {minutes:g} minutes of one CPU thread,",
        "then scored on held-out avatars (2048 per set, 128 patches per image and level) with `aae/metrics.py`.",
        f"SWD ×10³ per level (64/32/16 px) → average. Real-vs-real floor: {_levels(floor)}.",
        "Re-run with `python -m bench.bench_ablation` (it rewrites this file and ablation.json).",
        "",
        "| variant | images seen | images/s | sample SWD | reconstruction SWD | held-out MSE | latent disc acc | ranks (sample, recon) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| **{r['variant']}** {r['description']} | {r['images_seen']:,} | {r['images_per_s']:.0f} | {_levels(r['sample_swd'])} "
            f"| {_levels(r['reconstruction_swd'])} | {r['heldout_reconstruction_mse']:.4f} | {r['latent_disc_accuracy']} "
            f"| {r['rank_sample_swd']}, {r['rank_reconstruction_swd']} |"
        )
    lines += ["", "Image adversary at the end (mean of the last 100 steps):", ""]
    lines += [
        "| variant | adaptive weight | D accuracy on reals | on fakes | steps frozen | decoder scored |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        cells = [
            r[k] if r[k] is not None else "–"
            for k in ("image_weight", "image_real_accuracy", "image_fake_accuracy", "image_frozen")
        ]
        lines.append(f"| {r['variant']} | {' | '.join(str(c) for c in cells)} | {r['export_decoder']} |")
    lines += ["", "Grids (64 prior samples; reconstructions: held-out face, then its reconstruction):", ""]
    lines += [
        f"- {r['variant']}: [samples]({r['variant']}_samples.png), [reconstructions]({r['variant']}_reconstructions.png)"
        for r in results
    ]
    (out / "ablation.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (out / "ablation.json").write_text(json.dumps({"minutes": minutes, "count": count, "variants": results}, indent=2) + "\n")


def _earlier(out: Path, minutes: float, count: int) -> list[dict[str, Any]]:
    """The other variants' results of an earlier run with the same budget, kept in the report."""
    path = out / "ablation.json"
    if not path.exists():
        return []
    earlier = json.loads(path.read_text())
    same = earlier.get("minutes") == minutes and earlier.get("count") == count
    return list(earlier["variants"]) if same else []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default=DEFAULT_VARIANTS, help=f"comma-separated, of {', '.join(VARIANTS)}")
    parser.add_argument("--minutes", type=float, default=7.0, help="training wall clock per variant")
    parser.add_argument(
        "--count", type=int, default=30000, help="training avatars (30000: the held-out set and floor of the v2 card)"
    )
    parser.add_argument("--runs", default="runs/ablation")
    parser.add_argument("--out", default="bench/results/ablation")
    parser.add_argument("--cache-dir", default="cache")
    parser.add_argument("--score-only", action="store_true", help="score the runs already in --runs")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    names = args.variants.split(",")
    results = [r for r in _earlier(out, args.minutes, args.count) if r["variant"] not in names]
    for name in names:
        started = time.monotonic()
        if not args.score_only:
            train_variant(name, args)
        results.append(score(name, Path(args.runs) / name, out, args.cache_dir))
        results.sort(key=lambda r: str(r["variant"]))
        print(f"variant {name}: {json.dumps(results[-1])} ({time.monotonic() - started:.0f} s)", flush=True)
        write_report(results, out, args.minutes, args.count)


if __name__ == "__main__":
    main()
