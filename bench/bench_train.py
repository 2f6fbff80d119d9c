"""Training throughput (images/s): the AAE's two phases against the plain AE's single phase, per image size.

Each row times whole mini-batch updates (forward, backward, optimizer) on avatar faces held in
memory, after warm-up steps. The baseline of every row is the AE at the same image size in the same
run, so the ratio is the price of the regularization phase. On CUDA the AAE also runs with and without
bfloat16 autocast (``TrainOptions.amp``), and the table adds that ratio.

    python bench/bench_train.py                 # CPU here; CUDA and mixed precision when present
    python bench/bench_train.py --sizes 64 --steps 50
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import torch

from aae.data import avatar_faces
from aae.model import AAEConfig
from aae.train import TrainOptions, build_trainer, pick_device


@dataclass
class Row:
    size: int
    kind: str
    amp: bool
    images_per_s: float


def _time(kind: str, size: int, amp: bool, data: torch.Tensor, steps: int, batch: int, device: torch.device) -> float:
    torch.manual_seed(0)
    config = AAEConfig(image_size=size, kind=kind, base_width=48)
    trainer = build_trainer(config, TrainOptions(amp=amp, batch_size=batch), device)
    batches = [data[torch.randint(0, len(data), (batch,))].to(device).float().div_(255) for _ in range(4)]
    for i in range(3):  # warm-up: allocator, cuDNN autotuning
        trainer.step(batches[i % 4])
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for i in range(steps):
        trainer.step(batches[i % 4])
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--steps", type=int, default=20, help="timed steps per row")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = pick_device(args.device)
    rows: list[Row] = []
    for size in args.sizes:
        data = torch.from_numpy(avatar_faces(256, seed=0, size=size, progress=False)).permute(0, 3, 1, 2).contiguous()
        for kind in ("ae", "vae", "aae"):
            rows.append(Row(size, kind, False, _time(kind, size, False, data, args.steps, args.batch_size, device)))
        if device.type == "cuda":
            rows.append(Row(size, "aae", True, _time("aae", size, True, data, args.steps, args.batch_size, device)))
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"training throughput on {name}, torch {torch.__version__}, batch {args.batch_size}, {args.steps} timed steps per row")
    print(f"{'size':>5s} {'kind':>5s} {'bf16':>5s} {'images/s':>9s} {'vs AE':>7s}")
    for row in rows:
        base = next(r for r in rows if r.size == row.size and r.kind == "ae")
        amp = "yes" if row.amp else "no"
        print(f"{row.size:5d} {row.kind:>5s} {amp:>5s} {row.images_per_s:9.0f} {row.images_per_s / base.images_per_s:6.2f}x")


if __name__ == "__main__":
    main()
