"""``synthgen evaluate --compare``: AE vs VAE vs AAE, the same networks, data, seed and number of steps.

Only ``AAEConfig.kind`` differs between the three runs. Each checkpoint is evaluated with the same metrics
on the same held-out faces; the table lands in ``OUT/compare.md`` and every number in ``OUT/compare.json``,
which ``synthgen evaluate MODEL --baselines OUT/compare.json`` puts on a model's card.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from aae.card import COLUMNS, compare_table, duration, save_grid, summary_row
from aae.evaluate import COMPARE_FORMAT, EvalSizes, evaluate_into, write_json
from aae.generators import CheckpointGenerator
from aae.model import MODEL_KINDS, AAEConfig
from aae.recipes import recipe
from aae.train import TrainOptions, train

log = logging.getLogger(__name__)

# Runs that are a kind with another option: "ae-raw" is the textbook plain autoencoder, whose code layer is
# linear, without the normalization to the prior's moments that the AE and the AAE share by default; "aae-gaussian"
# is the AAE whose q(z|x) is a Gaussian (AAEConfig.posterior).
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "ae-raw": ("ae", {"normalize_codes": False}),
    "aae-gaussian": ("aae", {"posterior": "gaussian"}),
}


def variant(name: str) -> tuple[str, dict[str, Any]]:
    """(model kind, the AAEConfig options that differ from the defaults) of a run name of the comparison."""
    kind, options = VARIANTS.get(name, (name, {}))
    if kind not in MODEL_KINDS:
        choices = ", ".join([*MODEL_KINDS, *VARIANTS])
        raise ValueError(f"unknown model kind {name!r}; expected some of {choices}")
    return kind, options


@dataclass
class CompareOptions:
    """The shared budget. The defaults take about 30 minutes on 2 CPU cores (64px, 10,000 avatars, 3 epochs, 4 runs)."""

    out: str = "bench/results/compare"  # compare.json, compare.md and the side-by-side pictures
    runs_dir: str = "runs/compare"  # one training run (checkpoint, losses, card) per kind
    data: str = "avatars"
    count: int = 10000
    epochs: int = 3
    batch_size: int = 64
    image_size: int = AAEConfig.image_size
    latent_dim: int = AAEConfig.latent_dim
    base_width: int = AAEConfig.base_width
    seed: int = 0
    data_seed: int = 0
    max_steps: int | None = None
    threads: int | None = None
    bf16: bool = False  # throughput settings, the same for every kind: they change no result beyond rounding
    channels_last: bool = False
    cache_dir: str = "cache"
    held_out: str | None = None
    kinds: tuple[str, ...] = ("ae-raw", "ae", "vae", "aae")
    recipe: str = "default"  # aae/recipes.py: the same recipe for every kind
    reuse: bool = False  # keep a run whose checkpoint and metrics.json already exist for this budget
    sizes: EvalSizes = field(default_factory=EvalSizes)

    def train_options(self, name: str) -> TrainOptions:
        kind, changes = variant(name)
        config = AAEConfig(
            image_size=self.image_size, latent_dim=self.latent_dim, base_width=self.base_width, kind=kind, **changes
        )
        options = TrainOptions(
            data=self.data,
            count=self.count,
            epochs=self.epochs,
            batch_size=self.batch_size,
            seed=self.seed,
            data_seed=self.data_seed,
            out_dir=str(Path(self.runs_dir) / name),
            cache_dir=self.cache_dir,
            max_steps=self.max_steps,
            threads=self.threads,
            bf16=self.bf16,
            channels_last=self.channels_last,
            config=config,
        )
        steps = self.epochs * (self.count // self.batch_size)
        return recipe(self.recipe).apply(options, steps if self.max_steps is None else min(steps, self.max_steps))

    def budget(self) -> dict[str, Any]:
        keep = (
            "data",
            "count",
            "epochs",
            "batch_size",
            "image_size",
            "latent_dim",
            "base_width",
            "seed",
            "data_seed",
            "max_steps",
            "recipe",
            "bf16",
        )
        return {k: v for k, v in asdict(self).items() if k in keep}


def _reusable(options: CompareOptions, run: Path) -> dict[str, Any] | None:
    """The metrics of an earlier run of this budget, when ``reuse`` is on and they match it."""
    if not (options.reuse and (run / "metrics.json").is_file() and (run / "checkpoint.pt").is_file()):
        return None
    metrics: dict[str, Any] = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    training = metrics.get("training", {})
    steps = options.epochs * (options.count // options.batch_size)
    steps = steps if options.max_steps is None else min(steps, options.max_steps)
    same = (training.get("images"), training.get("batch_size"), training.get("steps")) == (
        options.count,
        options.batch_size,
        steps,
    )
    return metrics if same and metrics.get("sizes") == asdict(options.sizes) else None


def _train_and_evaluate(options: CompareOptions, name: str) -> tuple[dict[str, Any], CheckpointGenerator]:
    run = Path(options.runs_dir) / name
    earlier = _reusable(options, run)
    if earlier is not None:
        log.info("compare: reusing %s (its checkpoint and metrics.json match this budget)", run)
        generator = CheckpointGenerator(run / "checkpoint.pt")
        generator.name = name
        return earlier, generator
    (run / "losses.jsonl").unlink(missing_ok=True)  # a fresh log: train() appends
    checkpoint = train(options.train_options(name))
    generator = CheckpointGenerator(checkpoint)
    generator.name = name
    metrics = evaluate_into(generator, run, options.sizes, options.held_out, options.cache_dir)
    return metrics, generator


def _side_by_side(generators: list[CheckpointGenerator], out: Path, seed: int) -> dict[str, str]:
    """Rows, one per kind: the same latents decoded by each model; and the same slerp path through each."""
    z = generators[0].sample_inputs(COLUMNS + 2, seed)
    path = generators[0].interpolate(z[COLUMNS], z[COLUMNS + 1], np.linspace(0.0, 1.0, COLUMNS))
    save_grid(np.concatenate([g.decode(z[:COLUMNS]) for g in generators]), out / "compare_samples.png")
    save_grid(np.concatenate([g.decode(path) for g in generators]), out / "compare_interpolation.png")
    return {"samples": "compare_samples.png", "interpolation": "compare_interpolation.png"}


def _normalization_note(result: dict[str, Any]) -> str:
    config = result["runs"].get("ae", {}).get("model", {}).get("config", {})
    if not config.get("normalize_codes"):
        return ""
    note = (
        "\n\nThe AE's and the AAE's codes both end in the normalization fixed to the prior's per-dimension mean and "
        "std (`normalize_codes`), so the AE's codes already have the prior's first two moments: what the adversarial "
        "regularization adds is the rest of the shape of q(z)."
    )
    if "ae-raw" in result["runs"]:
        note += " The plain AE (`ae-raw`) has a linear code layer, as in the textbook autoencoder: nothing at all ties its codes to the prior."
    return note


def _markdown(result: dict[str, Any]) -> str:
    budget = result["budget"]
    order = ", ".join(k.upper() for k in result["kinds"])
    return f"""# AE vs VAE vs AAE

`synthgen evaluate --compare` trained {order} with the same encoder and decoder (only the regularization of z
differs), on the same {budget["count"]:,} `{budget["data"]}` images at {budget["image_size"]}px, with the same seed and
{budget["epochs"]} epochs of batch {budget["batch_size"]} each ({result["steps"]} steps), then evaluated each one with
the same metrics on the same held-out faces (`synthgen evaluate`; each run's card is in `{result["runs_dir"]}/KIND/card.md`).
The comparison took {duration(result["seconds"])}.{_normalization_note(result)}

{compare_table(result["table"])}

- **sample SWD ×10³**: random z from the prior, decoded, against held-out real faces (lower is better; the
  real-vs-real floor is the same metric between two disjoint held-out sets).
- **prior fit**: MMD² between encoded held-out faces and prior samples, with its permutation p-value (a small p
  means the codes are not distributed as the prior), and the largest per-dimension KS statistic.
- **interpolation**: SWD of the slerp midpoints of random pairs, against that of the endpoints.

Rows: the same 8 latents through each model ({order}, top to bottom), then the same slerp path.

![samples](compare_samples.png)

![interpolation](compare_interpolation.png)
"""


def compare(options: CompareOptions) -> dict[str, Any]:
    """Train and evaluate each kind; write ``compare.json`` and ``compare.md`` into ``options.out``."""
    started = time.perf_counter()
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    runs: dict[str, Any] = {}
    generators = []
    for kind in options.kinds:
        log.info("compare: training and evaluating the %s", kind)
        runs[kind], generator = _train_and_evaluate(options, kind)
        generators.append(generator)
    files = _side_by_side(generators, out, options.sizes.seed)
    result = {
        "format": COMPARE_FORMAT,
        "kinds": list(options.kinds),
        "budget": options.budget(),
        "steps": runs[options.kinds[0]]["training"].get("steps"),
        "sizes": asdict(options.sizes),
        "runs_dir": options.runs_dir,
        "table": [summary_row(runs[kind]) for kind in options.kinds],
        "files": files,
        "seconds": round(time.perf_counter() - started, 1),
        "runs": runs,
    }
    write_json(out / "compare.json", result)
    (out / "compare.md").write_text(_markdown(result), encoding="utf-8")
    return result
