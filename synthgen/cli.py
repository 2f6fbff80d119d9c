"""The ``synthgen`` command. Each subcommand imports what it needs when it runs, so ``serve`` and
``generate`` never import torch (the service image does not have it)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from synthgen import __version__
from synthgen.core.imagefolder import LAYOUTS, UNSUPPORTED_FORMATS
from synthgen.core.images import DEFAULT_FORMAT, DEFAULT_QUALITY, FORMATS
from synthgen.crowd_options import add_crowd_arguments, crowd_from_args, requested_count

if TYPE_CHECKING:
    from aae.attribute_teacher import TeacherOptions
    from aae.evaluate import EvalSizes
    from aae.image_adversary import AdversaryOptions
    from aae.model import AAEConfig
    from aae.train import TrainOptions

log = logging.getLogger("synthgen")


def _say(text: str) -> None:
    sys.stdout.write(text + "\n")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text}")
    return value


# the AAEConfig fields `synthgen train` takes as flags (a fine-tune repeats its checkpoint's; see _fine_tuned_config)
TRAIN_ARCHITECTURE = (
    "image_size",
    "latent_dim",
    "base_width",
    "disc_hidden",
    "upsample",
    "decoder_norm",
    "res_blocks",
    "posterior",
)


def _architecture(args: argparse.Namespace, *names: str) -> dict[str, Any]:
    """The architecture options given on the command line; the others keep AAEConfig's defaults (one place)."""
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}


def _train_config(args: argparse.Namespace) -> AAEConfig:
    from aae.model import AAEConfig

    if args.init:
        return _fine_tuned_config(args)
    prior: dict[str, object] = {"kind": args.prior}
    if args.prior == "mixture":
        prior.update(components=args.components, radius=args.radius)
    if args.prior_std is not None:
        prior["std"] = args.prior_std
    return AAEConfig(
        prior=prior,
        kind=args.kind,
        **_architecture(args, *TRAIN_ARCHITECTURE),
    )


def _fine_tuned_config(args: argparse.Namespace) -> AAEConfig:
    """--init: the architecture of the checkpoint to fine-tune; architecture flags may only repeat it."""
    from aae.model import AAEConfig
    from aae.package_start import is_package
    from aae.train import read_start, resume_path

    if not (is_package(args.init) or resume_path(args.init).is_file()):
        raise ValueError(
            f"--init {args.init}: no checkpoint there (expected a run folder or a .pt of synthgen train, or a model package)"
        )
    config = AAEConfig.from_dict(read_start(args.init, args.seed)["config"])
    if is_package(args.init) and args.posterior is not None:
        # a package gives the decoder alone: the new encoder may take another posterior
        config = AAEConfig.from_dict({**config.to_dict(), "posterior": args.posterior})
    given = _architecture(args, *TRAIN_ARCHITECTURE)
    given.update(kind=args.kind, prior=args.prior)
    theirs = {**config.to_dict(), "prior": config.prior["kind"]}
    differ = {k: v for k, v in given.items() if theirs.get(k) != v}
    if differ:
        mismatch = ", ".join(f"{k} {v!r} (the checkpoint's: {theirs.get(k)!r})" for k, v in differ.items())
        raise ValueError(f"--init {args.init}: a fine-tune keeps the checkpoint's architecture; given {mismatch}")
    return config


def _given(value: Any, fallback: Any) -> Any:
    """A flag's value, or (left out) the recipe's."""
    return fallback if value is None else value


def _adversary_options(args: argparse.Namespace) -> AdversaryOptions | None:
    from aae.image_adversary import AdversaryOptions
    from aae.recipes import recipe

    base = recipe(args.recipe).adversary
    if not (args.image_adversary or base):
        return None
    base = base or AdversaryOptions()
    return AdversaryOptions(
        start=_given(args.adv_start, base.start),
        fakes=_given(args.adv_fakes, base.fakes),
        lr=args.adv_lr,
        weight=args.adv_weight,
        max_weight=args.adv_max_weight,
        r1_gamma=_given(args.r1_gamma, base.r1_gamma),
        r1_every=args.r1_every,
        freeze_accuracy=args.adv_freeze_accuracy,
    )


def _teacher_options(args: argparse.Namespace) -> TeacherOptions | None:
    """--attribute-teacher, or the recipe's teacher for a conditional run (an unconditional one has no labels to teach)."""
    from dataclasses import replace

    from aae.attribute_teacher import TeacherOptions
    from aae.recipes import recipe

    base = recipe(args.recipe).teacher if args.conditional else None
    if not (args.attribute_teacher or base):
        given = [f for f, v in (("--teachers", args.teachers), ("--teacher-init", args.teacher_init),
                                ("--teacher-attribute-weight", args.teacher_attribute_weight)) if v]  # fmt: skip
        if given:
            raise ValueError(f"{', '.join(given)}: this run has no attribute teacher (--attribute-teacher, or --recipe v4)")
        return None
    base = base or TeacherOptions()
    init = tuple(args.teacher_init or base.init)
    return replace(
        base,
        weight=_given(args.teacher_weight, base.weight),
        start=_given(args.teacher_start, base.start),
        teachers=_given(args.teachers, max(base.teachers, len(init))),
        init=init,
        attribute_weights={**base.attribute_weights, **_attribute_weights(args.teacher_attribute_weight or [])},
    )


def _attribute_weights(pairs: list[str]) -> dict[str, float]:
    """--teacher-attribute-weight NAME=WEIGHT, repeated."""
    out = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        try:
            weight = float(text) if sep and name else -1.0
        except ValueError:
            weight = -1.0
        if not weight >= 0:
            raise ValueError(f"--teacher-attribute-weight {pair!r}: expected NAME=WEIGHT with a weight >= 0, e.g. facial_hair=3")
        out[name] = weight
    return out


def _train_options(args: argparse.Namespace) -> TrainOptions:
    from aae.recipes import recipe
    from aae.train import TrainOptions

    chosen = recipe(args.recipe)
    return TrainOptions(
        data=args.data,
        count=args.count,
        epochs=args.epochs or 10,
        batch_size=args.batch_size,
        lr_reconstruction=args.lr_reconstruction,
        lr_encoder_reconstruction=_given(args.lr_encoder_reconstruction, chosen.lr_encoder_reconstruction),
        lr_discriminator=_given(args.lr_discriminator, chosen.lr_discriminator),
        lr_generator=_given(args.lr_generator, chosen.lr_generator),
        seed=args.seed,
        data_seed=args.data_seed,
        out_dir=args.out,
        cache_dir=args.cache_dir,
        device=args.device,
        max_steps=args.max_steps,
        max_minutes=args.max_minutes,
        threads=args.threads,
        amp=not args.no_amp,
        bf16=args.bf16,
        channels_last=args.channels_last,
        recon_loss=args.recon_loss,
        frequency_weight=args.frequency_weight,
        shared_encoder=args.shared_encoder,
        gen_weight=args.gen_weight,
        disc_steps=_given(args.disc_steps, chosen.disc_steps),
        prior_sliced_weight=_given(args.prior_sliced_weight, chosen.prior_sliced_weight),
        adversary=_adversary_options(args),
        teacher=_teacher_options(args),
        ema_kimg=_given(args.ema_kimg, chosen.ema_kimg),
        export_ema=not args.no_export_ema,
        checkpoint_minutes=args.checkpoint_minutes or 5.0,
        conditional=args.conditional,
        init=args.init,
        decoder_frozen_steps=args.decoder_frozen_steps,
        config=_train_config(args),
    )


def _resumed_options(args: argparse.Namespace) -> TrainOptions:
    """The run's own options; --epochs, --max-steps, --max-minutes, --threads and --checkpoint-minutes may change."""
    from dataclasses import replace

    from aae.train import resumable_options

    options = resumable_options(args.resume)
    changes = {"epochs": args.epochs, "max_steps": args.max_steps, "threads": args.threads, "max_minutes": args.max_minutes}
    changes["checkpoint_minutes"] = args.checkpoint_minutes
    run_dir = Path(args.resume) if Path(args.resume).is_dir() else Path(args.resume).parent
    return replace(options, out_dir=str(run_dir), **{k: v for k, v in changes.items() if v is not None})


def cmd_train(args: argparse.Namespace) -> int:
    from aae.train import train

    try:
        if args.resume and args.init:
            raise ValueError("--init starts a new run from another's weights, --resume continues a run: give one")
        options = _resumed_options(args) if args.resume else _train_options(args)
    except ValueError as e:
        _say(f"error: {e}")
        return 2
    checkpoint = train(options, resume=args.resume)
    _say(f"checkpoint: {checkpoint}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from export.package import describe_result, export_package, verify_package

    if args.verify:
        for line in verify_package(args.verify, args.checkpoint):
            _say(line)
        _say("package verified")
        return 0
    if not args.checkpoint or not args.out:
        raise ValueError("expected: synthgen export CHECKPOINT --out models/NAME (or: synthgen export --verify PACKAGE)")
    from export.package import TrainingData

    training = TrainingData(args.train_index, args.train_count, args.train_seed, args.cache_dir) if args.train_index else None
    result = export_package(
        args.checkpoint,
        args.out,
        name=args.name,
        version=args.version,
        with_encoder=not args.no_encoder,
        training_data=training,
        decoder=args.decoder,
        classifier=args.classifier,
    )
    _say(describe_result(result))
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from aae.latent_calibration import CalibrationError, calibrate

    try:
        record = calibrate(args.checkpoint, args.out, args.images, args.seed, args.cache_dir)
    except CalibrationError as e:
        _say(f"error: {args.checkpoint}: {e}")
        return 2
    eigenvalues = record["eigenvalues_before"]
    _say(
        f"{args.out}: the codes of {record['images']} training images ({record['codes']}) whitened; their covariance's "
        f"eigenvalues ran from {eigenvalues[0]:.3g} to {eigenvalues[-1]:.3g}"
    )
    return 0


def cmd_classifier_train(args: argparse.Namespace) -> int:
    from aae.classifier import ClassifierOptions, load_classifier, train_classifier

    options = ClassifierOptions(
        data=args.data,
        count=args.count,
        seed=args.data_seed,
        start=args.start,
        image_size=args.image_size,
        width=args.width,
        batch_size=args.batch_size,
        steps=args.steps,
        max_minutes=args.max_minutes,
        lr=args.lr,
        train_seed=args.seed,
        threads=args.threads,
        bf16=args.bf16,
        held_out_seed=args.held_out_seed,
        held_out_count=args.held_out_count,
        cache_dir=args.cache_dir,
        out_dir=args.out,
    )
    path = train_classifier(options)
    summary = load_classifier(path)[1]["summary"]
    for name, fraction in summary["accuracy"].items():
        _say(f"{name}: {100 * fraction:.1f}% of held-out labels")
    _say(f"classifier: {path} ({summary['steps']} steps, {summary['seconds']:.0f} s)")
    return 0


def cmd_classifier_add(args: argparse.Namespace) -> int:
    from export.classifier import attach_classifier

    entry = attach_classifier(args.package, args.checkpoint, args.cache_dir)
    accuracy = ", ".join(f"{n} {100 * a:.1f}%" for n, a in entry["accuracy"].items())
    _say(f"{args.package}: classifier.onnx added (held-out accuracy: {accuracy})")
    return 0


def cmd_control(args: argparse.Namespace) -> int:
    import json

    from aae.control import ControlSizes, control_table, package_control

    sizes = ControlSizes(args.per_value, args.identities, args.per_identity, args.seed, args.truncation)
    result = package_control(_resolve_model(args.model), sizes)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    _say(f"control of {result['model']}:\n")
    _say(control_table(result))
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    crowd = crowd_from_args(args)
    if args.layout == "imagefolder" and args.format in UNSUPPORTED_FORMATS:
        raise ValueError(f"--layout imagefolder needs an image format, not {args.format}")
    if args.server:
        from synthgen.remote import generate_from_args

        return generate_from_args(args, crowd, requested_count(args, crowd))
    if args.shards is not None:
        raise ValueError("--shards needs --server (in-process generation writes a folder)")
    if args.layout != "files":
        raise ValueError(f"--layout {args.layout} needs --server (it writes the server's dataset card as README.md)")
    from service.engine.generate_local import generate_to_directory
    from service.engine.registry import build_registry
    from service.engine.rendering import RenderSpec
    from service.settings import get_settings

    settings = get_settings()
    models_dir = Path(args.models_dir) if args.models_dir else None
    model = build_registry(settings, models_dir, args.model).get(args.model)
    count = crowd.validated(model.package.attributes, args.count)
    seed = 0 if args.seed is None else args.seed
    spec = RenderSpec(
        seed, args.truncation, args.format, args.quality, settings.png_compress_level, crowd=crowd, count=count,
        labels=not args.no_labels,
    )  # fmt: skip
    batch = args.batch_size or settings.batch_size
    out = generate_to_directory(model, spec, count, args.out, batch, settings.encode_threads)
    _say(f"{count} images of {model.package.ref} in {out}/ (manifest.jsonl lists them)")
    return 0


def cmd_interpolate(args: argparse.Namespace) -> int:
    """A strip of faces from one image to another (the lecture's cat -> dog walk), as one image file."""
    out = Path(args.out)
    from synthgen.core.images import FORMAT_BY_EXTENSION

    fmt = FORMAT_BY_EXTENSION.get(out.suffix.lstrip(".").lower())
    if fmt is None or fmt == "npy":
        raise ValueError(f"--out must end in .png, .jpg or .webp, got {out.name!r}")
    if args.server:
        from synthgen.client import SynthgenClient

        options = {"from_index": args.from_index, "to_index": args.to_index, "truncation": args.truncation}
        with SynthgenClient(args.server, api_key=args.api_key or os.environ.get("SYNTHGEN_API_KEY")) as client:
            data = client.interpolate(
                args.from_seed, args.to_seed, args.steps, args.method, args.model, fmt, "strip",
                **{k: v for k, v in options.items() if v is not None},
            )  # fmt: skip
    else:
        from service.engine.registry import build_registry
        from service.engine.rendering import interpolation_latents, strip_image
        from service.settings import get_settings
        from synthgen.core.images import encode_image

        model = build_registry(get_settings(), default=args.model).get(args.model)
        ends = ((args.from_seed, args.from_index), (args.to_seed, args.to_index))
        z, _ = interpolation_latents(model, ends, args.steps, args.method, args.truncation)
        data = encode_image(strip_image(model.decode(z)), fmt)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)
    _say(
        f"{args.steps} faces from seed {args.from_seed}/{args.from_index} to {args.to_seed}/{args.to_index} ({args.method}) in {out}"
    )
    return 0


def _eval_sizes(args: argparse.Namespace) -> EvalSizes:
    from aae.evaluate import EvalSizes

    return EvalSizes(
        swd=args.samples,
        duplicates=args.duplicates,
        prior_codes=args.prior_codes,
        permutations=args.permutations,
        pairs=args.pairs,
        train_neighbours=args.train_neighbours,
        patches=args.patches,
        seed=args.seed,
    )


def _evaluate_compare(args: argparse.Namespace) -> int:
    from aae.compare import CompareOptions, compare

    if args.model or args.checkpoint or args.baselines:
        raise ValueError("--compare trains its own models: it takes no MODEL, --checkpoint or --baselines")
    options = CompareOptions(
        out=args.out or CompareOptions.out,
        runs_dir=args.runs_dir,
        count=args.count,
        epochs=args.epochs,
        batch_size=args.batch_size,
        max_steps=args.max_steps,
        threads=args.threads,
        bf16=args.compare_bf16,
        channels_last=args.compare_channels_last,
        cache_dir=args.cache_dir,
        held_out=args.held_out,
        kinds=tuple(args.kinds.split(",")),
        recipe=args.recipe,
        reuse=args.reuse,
        sizes=_eval_sizes(args),
        **_architecture(args, "image_size", "latent_dim", "base_width"),
    )
    result = compare(options)
    from aae.card import compare_table, duration

    _say(compare_table(result["table"]))
    _say(f"comparison: {Path(options.out) / 'compare.md'} and compare.json (in {duration(result['seconds'])})")
    return 0


def _resolve_model(model: str) -> Path:
    """A package folder, a model name under the models directory, or a checkpoint file."""
    path = Path(model)
    if path.exists():
        return path
    from service.settings import get_settings

    named = Path(get_settings().models_dir) / model
    if named.is_dir():
        return named
    raise FileNotFoundError(f"{model}: neither a model package folder, a model name under models/, nor a checkpoint")


def _package_control(path: Path, per_value: int) -> dict[str, Any] | None:
    """A conditional package's control metrics for its card, when it ships a classifier to judge them."""
    from aae.control import ControlSizes, package_control
    from synthgen.core.package import load_package

    package = load_package(path)
    if not package.attributes or package.classifier_path is None or per_value == 0:
        return None
    return package_control(path, ControlSizes(per_value=per_value))


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Metrics and a model card for one model, or (--compare) the AE / VAE / AAE comparison."""
    if args.compare:
        return _evaluate_compare(args)
    if not args.model:
        raise ValueError("expected: synthgen evaluate MODEL [--checkpoint CKPT] (or: synthgen evaluate --compare)")
    from aae.card import compare_line, duration, summary_row
    from aae.evaluate import evaluate_into
    from aae.generators import CheckpointGenerator, Generator, PackageGenerator

    path = _resolve_model(args.model)
    generator: Generator
    if path.is_file():
        generator, out = CheckpointGenerator(path), Path(args.out or path.parent)
    else:
        generator, out = PackageGenerator(path, args.checkpoint), Path(args.out or path)
    control = _package_control(path, args.control_per_value) if path.is_dir() else None
    metrics = evaluate_into(generator, out, _eval_sizes(args), args.held_out, args.cache_dir, args.baselines, control)
    _say(compare_line(summary_row(metrics), metrics["model"]["name"]))
    _say(f"model card: {out / 'card.md'} and metrics.json (in {duration(metrics['timing']['total'])})")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from service.serve import serve

    return serve(args.role, args.host, args.port)


def cmd_health(args: argparse.Namespace) -> int:
    from service.worker.health import check_worker_health

    ok, message = check_worker_health(args.max_age, args.name)
    _say(message)
    return 0 if ok else 1


_ARCHITECTURE_HELP = {
    "--image-size": "32, 64 or 128 (default: AAEConfig's)",
    "--latent-dim": "dimensions of z (default: AAEConfig's)",
    "--base-width": "channels of the first conv (default: AAEConfig's)",
    "--disc-hidden": "latent discriminator width (default: AAEConfig's)",
}


def _add_architecture(parser: argparse.ArgumentParser | argparse._ArgumentGroup, *flags: str) -> None:
    """Architecture flags default to None: AAEConfig holds the defaults (the CLI cannot import torch to read them)."""
    for flag in flags:
        kind = _image_size if flag == "--image-size" else _positive_int
        parser.add_argument(flag, type=kind, default=None, help=_ARCHITECTURE_HELP[flag])


def _image_size(text: str) -> int:
    value = int(text)
    if value not in (32, 64, 128):
        raise argparse.ArgumentTypeError(f"expected 32, 64 or 128, got {text}")
    return value


def _add_evaluate(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "evaluate",
        help="metrics and a model card (card.md, metrics.json, grids) for a model; --compare: AE vs VAE vs AAE",
        description="Write card.md, metrics.json and PNG grids into a model package (needs the 'train' extra).",
    )
    p.add_argument("model", nargs="?", help="a package folder, a model name under models/, or a checkpoint .pt")
    p.add_argument(
        "--checkpoint", default=None, help="the package's torch checkpoint: its encoder, when there is no encoder.onnx"
    )
    p.add_argument("--held-out", default=None, metavar="FOLDER", help="real images never seen in training (default: see docs)")
    p.add_argument("--baselines", default=None, metavar="COMPARE_JSON", help="put this comparison on the card")
    p.add_argument(
        "--control-per-value",
        type=int,
        default=64,
        help="a conditional package with a classifier: images per attribute value for the card's control table (0: none)",
    )
    p.add_argument(
        "--out", default=None, help="where to write (default: the package folder; with --compare: bench/results/compare)"
    )
    p.add_argument("--cache-dir", default="cache")
    p.add_argument("--samples", type=_positive_int, default=2048, help="samples vs held-out faces for the SWD (and floor sets)")
    p.add_argument("--duplicates", type=_positive_int, default=10000, help="samples for the near-duplicate rate")
    p.add_argument("--prior-codes", type=_positive_int, default=1000, help="encoded held-out faces for the prior fit")
    p.add_argument("--permutations", type=_positive_int, default=200, help="of the MMD permutation test")
    p.add_argument("--pairs", type=_positive_int, default=512, help="latent pairs for the interpolation SWD")
    p.add_argument("--train-neighbours", type=_positive_int, default=5000, help="training faces searched (memorization)")
    p.add_argument("--patches", type=_positive_int, default=128, help="SWD patches per image and level")
    p.add_argument("--seed", type=int, default=0)
    g = p.add_argument_group("--compare: train the AE, VAE and AAE with one budget and compare them")
    g.add_argument("--compare", action="store_true")
    g.add_argument(
        "--kinds",
        default="ae-raw,ae,vae,aae",
        help="ae-raw: the AE with a plain linear code layer; aae-gaussian: the AAE with a gaussian posterior",
    )
    g.add_argument("--reuse", action="store_true", help="keep runs whose checkpoint and metrics match this budget")
    g.add_argument("--count", type=_positive_int, default=10000, help="avatars to train on")
    g.add_argument("--epochs", type=_positive_int, default=3)
    g.add_argument("--batch-size", type=_positive_int, default=64)
    _add_architecture(g, "--image-size", "--latent-dim", "--base-width")
    g.add_argument("--max-steps", type=_positive_int, default=None)
    g.add_argument("--threads", type=_positive_int, default=None)
    g.add_argument("--compare-bf16", action="store_true", help="train every kind with bfloat16 autocast (AMX CPUs)")
    g.add_argument("--compare-channels-last", action="store_true", help="train every kind in the NHWC memory format")
    g.add_argument("--runs-dir", default="runs/compare", help="checkpoints and per-kind cards")
    g.add_argument("--recipe", default="default", help="the training recipe of every kind: a name in aae/recipes.py")
    p.set_defaults(func=cmd_evaluate)


def _add_classifier(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("classifier", help="the attribute classifier a package ships (needs the 'train' extra)")
    actions = p.add_subparsers(dest="action", required=True)
    t = actions.add_parser("train", help="train it on labeled real images; measure it on held-out ones")
    t.add_argument("--data", default="avatars", help="'avatars' or a folder of images with a label file")
    t.add_argument("--count", type=_positive_int, default=20000, help="training images")
    t.add_argument("--data-seed", type=int, default=0, help="the avatars' dataset seed")
    t.add_argument("--start", type=int, default=0, help="the first training image (a folder)")
    t.add_argument("--image-size", type=_image_size, default=64, help="the package's image size")
    t.add_argument("--width", type=_positive_int, default=32, help="channels of the first stage")
    t.add_argument("--batch-size", type=_positive_int, default=128)
    t.add_argument("--steps", type=_positive_int, default=3000)
    t.add_argument("--max-minutes", type=_positive_float, default=None, help="stop after this much training time")
    t.add_argument("--lr", type=_positive_float, default=2e-3)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--threads", type=_positive_int, default=None)
    t.add_argument("--bf16", action="store_true", help="bfloat16 autocast (pays where the CPU has AMX)")
    t.add_argument("--held-out-seed", type=int, default=7, help="avatars: the held-out images' dataset seed")
    t.add_argument("--held-out-count", type=_positive_int, default=2000)
    t.add_argument("--cache-dir", default="cache")
    t.add_argument("--out", default="runs/classifier")
    t.set_defaults(func=cmd_classifier_train)
    a = actions.add_parser("add", help="add (or replace) the classifier of an existing package")
    a.add_argument("package", help="a package folder")
    a.add_argument(
        "checkpoint",
        metavar="SOURCE",
        help="a classifier checkpoint (synthgen classifier train), or a package of the same attributes whose classifier to copy",
    )
    a.add_argument("--cache-dir", default=None, help="where the held-out images may be cached")
    a.set_defaults(func=cmd_classifier_add)


def _add_control(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("control", help="does a conditional model show what it is asked for? (its package's classifier judges)")
    p.add_argument("model", help="a package folder or a model name under models/")
    p.add_argument("--per-value", type=_positive_int, default=16, help="images per value of each attribute")
    p.add_argument("--identities", type=_positive_int, default=64)
    p.add_argument("--per-identity", type=_positive_int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--truncation", type=_positive_float, default=None)
    p.add_argument("--json", default=None, metavar="FILE", help="also write the metrics as JSON")
    p.set_defaults(func=cmd_control)


def _add_train(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("train", help="train an AAE, or an AE or VAE baseline (needs the 'train' extra)")
    p.add_argument("--kind", default="aae", choices=["aae", "ae", "vae"], help="the AAE, or a baseline of the same networks")
    p.add_argument("--prior", default="gaussian", choices=["gaussian", "mixture"])
    p.add_argument("--prior-std", type=_positive_float, default=None, help="default: 1 (gaussian), 0.5 (mixture)")
    p.add_argument("--components", type=_positive_int, default=10, help="mixture prior: number of Gaussians")
    p.add_argument("--radius", type=_positive_float, default=2.0, help="mixture prior: distance of the means from 0")
    p.add_argument("--threads", type=_positive_int, default=None, help="CPU threads for torch")
    p.add_argument("--no-amp", action="store_true", help="no bfloat16 autocast on CUDA")
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast on CPU too (AMX)")
    p.add_argument("--channels-last", action="store_true", help="NHWC memory format for the convolutions")
    p.add_argument(
        "--recipe", default="default", help="a named recipe of aae/recipes.py (default, sharp, v3, v4, v6, v7, v8); flags win"
    )
    p.add_argument("--data", default="avatars", help="'avatars', 'lfw', or a folder of images")
    p.add_argument(
        "--conditional",
        action="store_true",
        help="a conditional model: the decoder takes the data's labels (avatars: by construction; a folder: its label file)",
    )
    p.add_argument("--count", type=_positive_int, default=20000, help="images to use")
    p.add_argument("--epochs", type=_positive_int, default=None, help="default: 10 (with --resume: the run's own)")
    p.add_argument("--batch-size", type=_positive_int, default=64)
    _add_architecture(p, "--image-size", "--latent-dim", "--base-width", "--disc-hidden")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda")
    p.add_argument("--max-steps", type=_positive_int, default=None)
    p.add_argument("--max-minutes", type=_positive_float, default=None, help="stop, resumably, after this much training time")
    p.add_argument("--cache-dir", default="cache")
    p.add_argument("--out", default="runs/aae")
    p.add_argument("--resume", metavar="RUN_DIR", default=None, help="continue a run from its last checkpoint (its own options)")
    p.add_argument(
        "--init",
        metavar="CHECKPOINT",
        default=None,
        help="fine-tune: start from this checkpoint (or run folder) of another run: its architecture, weights, decoder "
        "EMA and teachers; optimizers, steps and warm-ups start afresh. A model package gives its decoder (its "
        "normalizations folded in) and a fresh encoder and latent discriminator",
    )
    p.add_argument(
        "--decoder-frozen-steps",
        type=int,
        default=0,
        help="the decoder takes no update for this many steps (a fine-tune from a package: the new encoder learns first)",
    )
    p.add_argument("--checkpoint-minutes", type=_positive_float, default=None, help="checkpoint this often too (default 5)")
    g = p.add_argument_group("decoder")
    g.add_argument("--upsample", default=None, choices=["convtranspose", "nearest", "bilinear"], help="default: AAEConfig's")
    g.add_argument("--decoder-norm", default=None, choices=["batch", "group", "none"], help="default: AAEConfig's")
    g.add_argument(
        "--res-blocks", type=int, default=None, help="residual blocks after each up-sampling stage (default: AAEConfig's)"
    )
    g.add_argument("--recon-loss", default="mse", choices=["mse", "l1", "laplacian"], help="laplacian: GLO's pyramid L1")
    g.add_argument("--frequency-weight", type=float, default=0.0, help="adds this times the L1 distance of the spectra")
    g.add_argument(
        "--ema-kimg",
        type=_positive_float,
        default=None,
        help="an EMA of the decoder, this half-life in kimg (default: the recipe's)",
    )
    g.add_argument("--no-export-ema", action="store_true", help="with --ema-kimg: tools still use the live decoder")
    g.add_argument("--lr-reconstruction", type=_positive_float, default=1e-3)
    g.add_argument(
        "--lr-encoder-reconstruction",
        type=_positive_float,
        default=None,
        help="the encoder's learning rate in the reconstruction phase (default: the recipe's, else --lr-reconstruction)",
    )
    g = p.add_argument_group("latent game (AAE)")
    g.add_argument(
        "--posterior",
        default=None,
        choices=["deterministic", "gaussian"],
        help="q(z|x): z = f(x), or z = mu(x) + sigma(x) * eps (default: deterministic; with --init PACKAGE the new "
        "encoder may take either)",
    )
    g.add_argument("--lr-discriminator", type=_positive_float, default=None, help="default: the recipe's")
    g.add_argument("--lr-generator", type=_positive_float, default=None, help="default: the recipe's")
    g.add_argument(
        "--disc-steps",
        type=_positive_int,
        default=None,
        help="latent discriminator updates per mini-batch (default: the recipe's)",
    )
    g.add_argument(
        "--prior-sliced-weight",
        type=_non_negative_float,
        default=None,
        help="the generator's loss adds this times the squared sliced Wasserstein distance of the codes to the prior "
        "(default: the recipe's; 0: the discriminator alone)",
    )
    g.add_argument("--shared-encoder", action="store_true", help="one encoder forward for reconstruction and generator")
    g.add_argument("--gen-weight", type=_positive_float, default=0.2, help="--shared-encoder: generator/recon gradient ratio")
    g = p.add_argument_group("image adversary (any kind)")
    g.add_argument("--image-adversary", action="store_true", help="a patch discriminator on images, hinge loss")
    g.add_argument("--adv-start", type=int, default=None, help="warm-up steps before it starts (default: the recipe's, or 500)")
    g.add_argument(
        "--adv-fakes", default=None, choices=["both", "recon", "prior"], help="reconstructions, prior samples (default: both)"
    )
    g.add_argument("--adv-lr", type=_positive_float, default=2e-4)
    g.add_argument("--adv-weight", type=_positive_float, default=0.5, help="times the adaptive (VQGAN) weight")
    g.add_argument("--adv-max-weight", type=_positive_float, default=1.0, help="the clamp on the adversarial weight")
    g.add_argument("--r1-gamma", type=float, default=None, help="R1 weight, pixels in [-1, 1] (0: none; default 0.01)")
    g.add_argument("--r1-every", type=_positive_int, default=16, help="lazy R1: every N steps")
    g.add_argument("--adv-freeze-accuracy", type=float, default=0.95, help="freeze it while its accuracy is above this")
    g = p.add_argument_group("attribute teacher (a conditional model)")
    g.add_argument(
        "--attribute-teacher",
        action="store_true",
        help="a classifier trained beside the model on real images; its cross-entropy on decoded prior samples "
        "teaches the decoder to show the labels it is given (aae/attribute_teacher.py)",
    )
    g.add_argument("--teacher-weight", type=_positive_float, default=None, help="times the adaptive weight (default 0.5)")
    g.add_argument("--teacher-start", type=int, default=None, help="steps before the decoder is taught (default 250)")
    g.add_argument("--teachers", type=_positive_int, default=None, help="classifiers in the teacher ensemble (default 1)")
    g.add_argument(
        "--teacher-init",
        nargs="+",
        metavar="CHECKPOINT",
        default=None,
        help="start the teachers from these: a classifier checkpoint (synthgen classifier train) gives one, a training "
        "checkpoint its run's teachers (default: --init's teachers, else none)",
    )
    g.add_argument(
        "--teacher-attribute-weight",
        action="append",
        metavar="NAME=WEIGHT",
        help="weigh this attribute in the decoder's term (default 1 each); repeat for more",
    )
    p.set_defaults(func=cmd_train)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="synthgen", description=__doc__)
    parser.add_argument("--version", action="version", version=f"synthgen {__version__}")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    sub = parser.add_subparsers(dest="command", required=True)

    _add_train(sub)
    _add_classifier(sub)
    _add_control(sub)

    p = sub.add_parser("export", help="export a checkpoint's decoder to an ONNX model package")
    p.add_argument("checkpoint", nargs="?", help="a checkpoint written by synthgen train")
    p.add_argument("--out", help="package folder, e.g. models/NAME")
    p.add_argument("--name", default=None, help="model name (default: the folder name)")
    p.add_argument("--version", default="1")
    p.add_argument("--no-encoder", action="store_true", help="leave encoder.onnx out of the package")
    p.add_argument("--train-index", metavar="DATA", help="ship the privacy guard's index of DATA: 'avatars', 'lfw' or a folder")
    p.add_argument("--train-count", type=_positive_int, default=30000, help="training images in the index")
    p.add_argument("--train-seed", type=int, default=0, help="dataset seed (avatars)")
    p.add_argument("--cache-dir", default="cache")
    p.add_argument("--verify", metavar="PACKAGE", help="re-check an existing package (with CHECKPOINT: also against torch)")
    p.add_argument(
        "--decoder",
        default="auto",
        choices=["auto", "ema", "live"],
        help="the decoder weights to export: the EMA average or the live ones (auto: what the checkpoint's training chose)",
    )
    p.add_argument("--classifier", metavar="CKPT", default=None, help="ship this attribute classifier as classifier.onnx")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "calibrate",
        help="whiten a trained model's codes: an affine map at the encoder's end, its inverse at the decoder's start",
    )
    p.add_argument("checkpoint", help="a checkpoint written by synthgen train (an AAE or an AE)")
    p.add_argument("--out", required=True, help="the calibrated checkpoint, for export (e.g. runs/NAME/calibrated.pt)")
    p.add_argument("--images", type=_positive_int, default=10000, help="training images whose codes the map is fitted on")
    p.add_argument("--seed", type=int, default=0, help="picks the images, and draws a gaussian posterior's samples")
    p.add_argument("--cache-dir", default="cache")
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("generate", help="generate images in-process (no server, no Redis), or on a server with --server")
    p.add_argument("--count", type=_positive_int, default=None, help="required, unless --identities and --per-identity say it")
    p.add_argument("--seed", type=int, default=None, help="default: 0 in-process; with --server, the server picks one")
    p.add_argument("--out", required=True)
    p.add_argument("--truncation", type=_positive_float, default=None)
    p.add_argument("--format", default=DEFAULT_FORMAT, choices=FORMATS)
    p.add_argument("--quality", type=int, default=DEFAULT_QUALITY, choices=range(1, 101), metavar="1..100")
    p.add_argument("--model", default=None, help="name or name@version (default: settings)")
    p.add_argument("--models-dir", default=None)
    p.add_argument(
        "--batch-size", type=_positive_int, default=None, help="in-process: latents per decode (default: SYNTHGEN_BATCH_SIZE)"
    )
    p.add_argument("--server", metavar="URL", default=None, help="generate on a synthgen server; re-run to resume")
    p.add_argument("--api-key", default=None, help="with --server (default: SYNTHGEN_API_KEY)")
    p.add_argument("--shards", type=_positive_int, default=None, help="with --server: write N WebDataset tar shards")
    p.add_argument(
        "--layout", default="files", choices=LAYOUTS,
        help="files: {key}.{ext} and manifest.jsonl; imagefolder (with --server): Hugging Face ImageFolder, "
        "train/ with metadata.jsonl, and the job's dataset card as README.md",
    )  # fmt: skip
    p.add_argument(
        "--no-labels", action="store_true",
        help="the model's classifier does not label the images (no predicted in their JSON): raw bulk throughput",
    )  # fmt: skip
    add_crowd_arguments(p, _positive_int)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("interpolate", help="a strip of faces walking from one image to another")
    p.add_argument("--from-seed", type=int, required=True)
    p.add_argument("--to-seed", type=int, required=True)
    p.add_argument("--from-index", type=int, default=0)
    p.add_argument("--to-index", type=int, default=0)
    p.add_argument("--steps", type=int, default=9, choices=range(2, 257), metavar="2..256")
    p.add_argument("--method", default="slerp", choices=["slerp", "lerp"])
    p.add_argument("--truncation", type=_positive_float, default=None)
    p.add_argument("--model", default=None)
    p.add_argument("--out", default="strip.png", help="strip.png, .jpg or .webp")
    p.add_argument("--server", default=None, help="ask a synthgen server instead of running the model here")
    p.add_argument("--api-key", default=None)
    p.set_defaults(func=cmd_interpolate)

    _add_evaluate(sub)

    p = sub.add_parser(
        "serve",
        help="run the HTTP API and/or a worker",
        description="Serve the API and/or a worker. With no REDIS_URL, --role all runs an embedded Redis whose "
        "append-only file lives in SYNTHGEN_DATA_DIR (default ~/.local/share/synthgen): jobs survive a restart or "
        "a crash. SIGTERM drains in-flight work (SYNTHGEN_DRAIN_TIMEOUT_S) before exiting.",
    )
    p.add_argument("--role", default="all", choices=["all", "api", "worker"])
    p.add_argument("--host", default=None, help="default: SYNTHGEN_HOST or 127.0.0.1")
    p.add_argument("--port", type=int, default=None, help="default: SYNTHGEN_PORT or 8000")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("health", help="exit 0 if a worker heartbeat is fresh (a liveness probe)")
    p.add_argument("--worker", action="store_true", required=True)
    p.add_argument("--name", default=None, help="worker name (default: this host's workers)")
    p.add_argument("--max-age", type=float, default=30.0)
    p.set_defaults(func=cmd_health)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        from synthgen.core.errors import SynthgenError

        from_export = type(exc).__name__ == "ExportError"
        if from_export or isinstance(exc, SynthgenError | FileNotFoundError | ValueError):
            sys.stderr.write(f"synthgen {args.command}: error: {exc}\n")
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
