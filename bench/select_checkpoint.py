"""Pick a run's checkpoint by its prior fit on held-out faces that the card's own test does not use.

The card measures the prior fit (MMD² with a permutation test) on the first 1,000 held-out faces; choosing among a
run's checkpoints by that same test would spend it. This ranks checkpoints by MMD² of held-out faces 3,000–3,999
(posterior samples, against prior samples; the card's sizes otherwise) and prints one JSON line per checkpoint, then
the one with the lowest MMD²:

    python -m bench.select_checkpoint runs/v8-cal/epoch001.pt runs/v8-cal/epoch002.pt --out bench/results/v8/selection.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from aae.evaluate import EvalSizes, codes_prior_fit, load_eval_data
from aae.generators import CheckpointGenerator

VALIDATION = slice(3000, 4000)  # held-out faces past the card's prior-fit set (its first 1,000)


def validation_fit(checkpoint: str, cache_dir: str) -> dict[str, Any]:
    sizes = EvalSizes().fitted(4096)
    generator = CheckpointGenerator(checkpoint)
    data = load_eval_data(generator, sizes, cache_dir=cache_dir)
    faces = data.held_out[VALIDATION]
    codes = generator.encode(faces, sample=True, seed=sizes.seed)
    fit = codes_prior_fit(generator, codes, sizes)
    return {
        "checkpoint": checkpoint,
        "faces": f"held-out {VALIDATION.start}..{VALIDATION.stop - 1}",
        **{k: fit[k] for k in ("mmd2", "p_value", "ks_max")},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--cache-dir", default="cache")
    parser.add_argument("--out", default=None, help="also write the JSON lines here")
    args = parser.parse_args(argv)
    lines = [validation_fit(c, args.cache_dir) for c in args.checkpoints]
    best = min(lines, key=lambda line: line["mmd2"])
    text = "\n".join(json.dumps(line) for line in [*lines, {"chosen": best["checkpoint"]}])
    print(text, flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
