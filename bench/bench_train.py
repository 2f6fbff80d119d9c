"""Training throughput (images/s): the AAE's two phases against the plain AE's single phase, per image size,
and the AAE with each option of the sharper recipe added in turn (``--phases``).

Each row times whole mini-batch updates (forward, backward, optimizer) on avatar faces held in
memory, after warm-up steps. The baseline of every row of the first table is the AE at the same image size in
the same run, so the ratio is the price of the regularization phase. On CUDA the AAE also runs with and without
bfloat16 autocast (``TrainOptions.amp``), and the table adds that ratio.

The second table starts from the AAE as it trains by default and adds, one at a time: bfloat16 autocast on
CPU, channels_last, one encoder forward shared by both phases, the resize-conv GroupNorm decoder with the
pyramid L1, the image adversary (on reconstructions and prior samples, active from the first step), and
the decoder's EMA, then (on the same faces with their ten python_avatars labels) the conditional model and
its attribute teacher; the ratio is to the first row of the same run. ``--check-bf16`` trains the AAE a few
dozen steps in float32 and in bfloat16 from the same seed on the same batches and compares the
reconstruction MSE of a held batch.

    python bench/bench_train.py                 # CPU here; CUDA and mixed precision when present
    python bench/bench_train.py --sizes 64 --steps 50
    python bench/bench_train.py --sizes 64 --phases --check-bf16 --threads 1
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F

from aae.attribute_teacher import TeacherOptions
from aae.data import avatar_faces
from aae.image_adversary import AdversaryOptions
from aae.labels import avatar_labels
from aae.model import AAEConfig
from aae.train import Trainer, TrainOptions, build_trainer, pick_device


@dataclass
class Row:
    size: int
    kind: str
    amp: bool
    images_per_s: float


@dataclass(frozen=True)
class Labels:
    """The faces' one-hot labels and what each shows, batch for batch beside the images."""

    attributes: dict[str, Any]  # AttributeSpace.to_manifest()
    one_hot: list[torch.Tensor]
    visible: list[torch.Tensor]


def _run(trainer: Trainer, batches: list[torch.Tensor], steps: int, device: torch.device, labels: Labels | None = None) -> float:
    def step(i: int) -> None:
        j = i % len(batches)
        if labels is None:
            trainer.step(batches[j])
        else:
            trainer.step(batches[j], labels.one_hot[j], labels.visible[j])

    for i in range(3):  # warm-up: allocator, cuDNN autotuning
        step(i)
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for i in range(steps):
        step(i)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * batches[0].shape[0] / (time.perf_counter() - started)


def _batch_indices(count: int, batch: int) -> list[torch.Tensor]:
    torch.manual_seed(0)
    return [torch.randint(0, count, (batch,)) for _ in range(4)]


def _batches(data: torch.Tensor, batch: int, device: torch.device) -> list[torch.Tensor]:
    return [data[idx].to(device).float().div_(255) for idx in _batch_indices(len(data), batch)]


def avatar_labels_of(count: int, batch: int, device: torch.device) -> Labels:
    """The labels of ``avatar_faces(count, seed=0)``, in the batches of ``_batches``."""
    table = avatar_labels(count, seed=0)
    space = table.space()
    one_hot, visible = torch.from_numpy(space.one_hot(table.codes)), torch.from_numpy(table.visible())
    indices = _batch_indices(count, batch)
    return Labels(space.to_manifest(), [one_hot[i].to(device) for i in indices], [visible[i].to(device) for i in indices])


def _time(kind: str, size: int, amp: bool, data: torch.Tensor, steps: int, batch: int, device: torch.device) -> float:
    torch.manual_seed(0)
    config = AAEConfig(image_size=size, kind=kind, base_width=48)
    trainer = build_trainer(config, TrainOptions(amp=amp, batch_size=batch), device)
    return _run(trainer, _batches(data, batch, device), steps, device)


def phase_options(size: int, batch: int) -> list[tuple[str, TrainOptions]]:
    """The AAE as it trains by default, then with each option of the sharper recipe added in turn."""
    base = TrainOptions(batch_size=batch, config=AAEConfig(image_size=size, base_width=48))
    sharp = AAEConfig(image_size=size, base_width=48, upsample="nearest", decoder_norm="group")
    rows = [("AAE, fp32 (default)", base)]
    rows.append(("+ bf16 autocast", replace(rows[-1][1], bf16=True)))
    rows.append(("+ channels_last", replace(rows[-1][1], channels_last=True)))
    rows.append(("+ shared encoder forward", replace(rows[-1][1], shared_encoder=True)))
    rows.append(("+ resize-conv GroupNorm decoder, pyramid L1", replace(rows[-1][1], config=sharp, recon_loss="laplacian")))
    rows.append(("+ image adversary (recon + prior fakes)", replace(rows[-1][1], adversary=AdversaryOptions(start=0))))
    rows.append(("+ decoder EMA", replace(rows[-1][1], ema_kimg=10.0)))
    return rows


def conditional_options(size: int, batch: int, attributes: dict[str, Any]) -> list[tuple[str, TrainOptions]]:
    """avatars-64 v4's training as it runs (bf16, channels_last, EMA, no image adversary), conditional, then with
    its attribute teacher (active from the first step), v6's patch adversary on prior samples, v7's gaussian
    posterior with its latent game (two discriminator updates per mini-batch), and v8's sliced prior term."""
    config = AAEConfig(image_size=size, base_width=48, attributes=attributes)
    base = TrainOptions(batch_size=batch, bf16=True, channels_last=True, ema_kimg=10.0, conditional=True, config=config)
    rows = [("conditional (bf16, channels_last, EMA)", base)]
    rows.append(("+ attribute teacher", replace(base, teacher=TeacherOptions(start=0))))
    rows.append(("+ image adversary (prior fakes)", replace(rows[-1][1], adversary=AdversaryOptions(start=0, fakes="prior"))))
    v7 = replace(rows[-1][1], config=replace(config, posterior="gaussian"), disc_steps=2)
    rows.append(("+ gaussian posterior, 2 discriminator steps", v7))
    rows.append(("+ sliced prior term (v8)", replace(v7, prior_sliced_weight=10.0, lr_encoder_reconstruction=3e-4)))
    return rows


def phases_table(size: int, data: torch.Tensor, steps: int, batch: int, device: torch.device) -> list[str]:
    batches = _batches(data, batch, device)
    lines = [f"{'size':>5s} {'images/s':>9s} {'vs first':>9s}  variant"]
    first = None
    labels = avatar_labels_of(len(data), batch, device)
    variants = [(name, options, None) for name, options in phase_options(size, batch)]
    variants += [(name, options, labels) for name, options in conditional_options(size, batch, labels.attributes)]
    for name, options, with_labels in variants:
        torch.manual_seed(0)
        speed = _run(build_trainer(options.config, options, device), batches, steps, device, with_labels)
        first = first or speed
        lines.append(f"{size:5d} {speed:9.0f} {speed / first:8.2f}x  {name}")
    return lines


def check_bf16(size: int, data: torch.Tensor, steps: int, batch: int, device: torch.device) -> str:
    """Reconstruction MSE of a held batch after ``steps`` steps, float32 against bfloat16, same seed and batches."""
    batches = _batches(data, batch, device)
    held = batches[0]
    errors = []
    for bf16 in (False, True):
        torch.manual_seed(0)
        options = TrainOptions(batch_size=batch, bf16=bf16, amp=bf16, config=AAEConfig(image_size=size, base_width=48))
        trainer = build_trainer(options.config, options, device)
        for i in range(steps):
            trainer.step(batches[1 + i % (len(batches) - 1)])
        trainer.model.eval()
        with torch.no_grad():
            errors.append(F.mse_loss(trainer.model(held), held).item())
    return f"reconstruction MSE after {steps} steps ({size}px): float32 {errors[0]:.5f}, bf16 {errors[1]:.5f} ({errors[1] / errors[0]:.3f}x)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--steps", type=int, default=20, help="timed steps per row")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--phases", action="store_true", help="the table of the sharper recipe's options, added in turn")
    parser.add_argument("--check-bf16", action="store_true", help="float32 against bfloat16 reconstruction MSE")
    parser.add_argument("--check-steps", type=int, default=60)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    rows: list[Row] = []
    extra: list[str] = []
    for size in args.sizes:
        data = torch.from_numpy(avatar_faces(256, seed=0, size=size, progress=False)).permute(0, 3, 1, 2).contiguous()
        for kind in ("ae", "vae", "aae"):
            rows.append(Row(size, kind, False, _time(kind, size, False, data, args.steps, args.batch_size, device)))
        if device.type == "cuda":
            rows.append(Row(size, "aae", True, _time("aae", size, True, data, args.steps, args.batch_size, device)))
        if args.phases:
            extra += ["", *phases_table(size, data, args.steps, args.batch_size, device)]
        if args.check_bf16:
            extra += ["", check_bf16(size, data, args.check_steps, args.batch_size, device)]
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"training throughput on {name}, torch {torch.__version__}, batch {args.batch_size}, {args.steps} timed steps per row")
    print(f"{'size':>5s} {'kind':>5s} {'bf16':>5s} {'images/s':>9s} {'vs AE':>7s}")
    for row in rows:
        base = next(r for r in rows if r.size == row.size and r.kind == "ae")
        amp = "yes" if row.amp else "no"
        print(f"{row.size:5d} {row.kind:>5s} {amp:>5s} {row.images_per_s:9.0f} {row.images_per_s / base.images_per_s:6.2f}x")
    for line in extra:
        print(line)


if __name__ == "__main__":
    main()
