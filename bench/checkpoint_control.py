"""Control of a conditional training checkpoint, judged by a package's classifier, before any export: for ranking
fine-tunes and runs on short budgets with the card's own protocol (``aae/control.py``).

    python -m bench.checkpoint_control runs/ft-a/checkpoint.pt runs/ft-b/checkpoint.pt \\
        --judge models/avatars-64-v4 --per-value 64 --out bench/results/v5/probe-control.json

Each checkpoint is decoded with the weights its training chose for tools (the EMA, when it has one), rounded as
the exported graph rounds; the judge is the package's ``classifier.onnx``, trained apart from every run. With
``--own-teacher`` the checkpoint's own (first) attribute teacher judges instead: the gap between the two is how
much of what the decoder shows only the network it was trained against sees.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from aae.control import ControlSizes, Generator, adherence, identity_consistency, package_generator
from aae.generators import CheckpointGenerator


def checkpoint_generator(checkpoint: str, judge: Generator, own_teacher: bool = False) -> Generator:
    """The checkpoint's decoder behind control's interface, with ``judge``'s classifier (or its own teacher's)."""
    model = CheckpointGenerator(checkpoint)
    if not model.attributes.same_values(judge.space):
        raise ValueError(f"{checkpoint}: its attributes are not the judge's")

    def decode(z: np.ndarray, y: np.ndarray) -> np.ndarray:
        return model.decode(np.concatenate([z, y], axis=1))

    return Generator(
        decode, own_teacher_of(checkpoint) if own_teacher else judge.classify, model.attributes, model.prior, model.latent_dim
    )


def own_teacher_of(checkpoint: str) -> Any:
    """The checkpoint's first attribute teacher as a classify function (uint8 images -> probabilities)."""
    from aae.attribute_teacher import teachers_in
    from aae.classifier import AttributeClassifier, ClassifierConfig, predict
    from aae.train import read_checkpoint

    saved = read_checkpoint(checkpoint)
    config, teacher = saved["config"], saved["options"].get("teacher")
    if not teacher:
        raise ValueError(f"{checkpoint}: its run had no attribute teacher")
    classifier = AttributeClassifier(
        ClassifierConfig(config["image_size"], config["channels"], teacher["width"], config["attributes"])
    )
    classifier.load_state_dict(teachers_in(saved, checkpoint, classifier.config.space)[0])
    return lambda images: predict(classifier, images)


def measure(
    checkpoint: str, judge: Generator, sizes: ControlSizes, names: list[str] | None, own_teacher: bool = False
) -> dict[str, Any]:
    model = checkpoint_generator(checkpoint, judge, own_teacher)
    identity = identity_consistency(model, sizes)
    return {
        "checkpoint": checkpoint,
        "judge": "its own first teacher" if own_teacher else "the package's classifier",
        "adherence": adherence(model, sizes, names),
        "identity_all": None if identity is None else identity.get("all"),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoints", nargs="+")
    p.add_argument("--judge", required=True, help="a conditional package whose classifier.onnx judges")
    p.add_argument("--per-value", type=int, default=64)
    p.add_argument("--attributes", nargs="*", default=None, help="default: the identity attributes")
    p.add_argument("--own-teacher", action="store_true", help="judge with each checkpoint's own first teacher instead")
    p.add_argument("--out", default=None, help="also write the results as JSON")
    args = p.parse_args(argv)
    judge, _ = package_generator(args.judge)
    names = args.attributes if args.attributes is not None else list(judge.space.identity)
    sizes = ControlSizes(per_value=args.per_value)
    results = [measure(c, judge, sizes, names or None, args.own_teacher) for c in args.checkpoints]
    for r in results:
        rates = ", ".join(f"{n} {100 * a['rate']:.1f}%" for n, a in r["adherence"].items() if a["rate"] is not None)
        together = "" if r["identity_all"] is None else f"; identity attributes all agree {100 * r['identity_all']:.1f}%"
        print(f"{r['checkpoint']}: {rates}{together}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
