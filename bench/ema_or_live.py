"""Which decoder weights of a checkpoint to export: its EMA or its live weights, whichever has the lower
sample SWD (the card's protocol, ``aae/metrics.py``) on the held-out faces of the checkpoint's data.

    python -m bench.ema_or_live runs/v3/checkpoint.pt --out bench/results/v3/ema_or_live.json

It prints both scores and the choice; pass the choice to ``synthgen export --decoder``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from aae.evaluate import EvalSizes, load_eval_data
from aae.generators import CheckpointGenerator
from aae.metrics import sliced_wasserstein


def score(checkpoint: str, cache_dir: str) -> dict[str, object]:
    sizes = EvalSizes().fitted(4096)
    result: dict[str, object] = {"checkpoint": checkpoint, "images": sizes.swd}
    data = None
    for decoder in ("ema", "live"):
        generator = CheckpointGenerator(checkpoint, decoder=decoder)
        data = data or load_eval_data(generator, sizes, cache_dir=cache_dir)
        samples = generator.decode(generator.sample_inputs(sizes.swd, sizes.seed))
        swd = sliced_wasserstein(samples, data.held_out[: sizes.swd], per_image=sizes.patches, seed=sizes.seed)
        result[decoder] = {"per_level_x1e3": [round(v, 2) for v in swd.per_level], "average_x1e3": round(swd.average, 2)}
    ema, live = result["ema"], result["live"]
    assert isinstance(ema, dict) and isinstance(live, dict)
    result["choice"] = "ema" if ema["average_x1e3"] <= live["average_x1e3"] else "live"
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a checkpoint of synthgen train with an EMA (--ema-kimg)")
    parser.add_argument("--cache-dir", default="cache")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    result = score(args.checkpoint, args.cache_dir)
    text = json.dumps(result, indent=2)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
