"""``synthgen evaluate``: every metric of ``aae/metrics.py`` on one model, against held-out real images.

Held-out images are real images the model never saw: for ``avatars``, the faces that follow the training
set (indices ``images`` .. of the same seed, rendered once and cached); for a folder, ``--held-out FOLDER``
or the folder's images after the training count. The real-vs-real floor of the SWD is the same metric
between two disjoint held-out sets of the same size. Everything is seeded: a re-run gives the same numbers.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from aae.data import image_folder, list_images, load_dataset
from aae.generators import EncoderUnavailable, Generator
from aae.labels import LabelTable, load_labels
from aae.metrics import (
    data_copying,
    interpolation_swd,
    near_duplicate_rate,
    prior_fit,
    prior_marginals,
    sliced_wasserstein,
)
from synthgen.core.attributes import AttributeSpace
from synthgen.core.files import write_atomically
from synthgen.core.similarity import METRIC as UNIQUENESS_METRIC

log = logging.getLogger(__name__)
FORMAT = "synthgen.evaluation/1"
COMPARE_FORMAT = "synthgen.compare/1"
MIN_SWD_IMAGES = 8


@dataclass(frozen=True)
class EvalSizes:
    """How many images each metric uses; the defaults take a few minutes for a 64px model on 2 CPU cores."""

    swd: int = 2048  # samples against held-out images, and the size of each of the floor's two held-out sets
    duplicates: int = 10000  # samples for the near-duplicate rate
    prior_codes: int = 1000  # encoded held-out images for the prior fit and the reconstruction error
    permutations: int = 200  # of the MMD permutation test
    pairs: int = 512  # random latent pairs for the interpolation SWD
    train_neighbours: int = 5000  # training images searched for nearest neighbours (memorization)
    patches: int = 128  # SWD patches per image and level
    seed: int = 0

    def fitted(self, held_out: int) -> EvalSizes:
        """These sizes, shrunk to what ``held_out`` real images allow (two disjoint SWD sets)."""
        swd = min(self.swd, held_out // 2)
        if swd < MIN_SWD_IMAGES:
            raise ValueError(f"only {held_out} held-out images; the SWD floor needs at least {2 * MIN_SWD_IMAGES}")
        return replace(self, swd=swd, pairs=min(self.pairs, swd), prior_codes=min(self.prior_codes, held_out))


@dataclass
class EvalData:
    held_out: np.ndarray  # uint8 [N, H, W, C], never seen in training
    train: np.ndarray  # a seeded random subset of the training images
    description: dict[str, Any] = field(default_factory=dict)
    # a conditional model's one-hot attributes of the held-out images [N, condition_dim], for reconstructions;
    # None for an unconditional model, or when the held-out images have no labels
    held_out_condition: np.ndarray | None = None
    condition_missing: str = ""  # why held_out_condition is None for a conditional model


def _training_source(training: dict[str, Any]) -> tuple[str, int, int]:
    try:
        return str(training["data"]), int(training.get("data_seed", 0)), int(training["images"])
    except KeyError as exc:
        raise ValueError(f"the model's training summary lacks {exc}: cannot tell which images are held out") from exc


def held_out_images(
    training: dict[str, Any], size: int, count: int, cache_dir: str | Path, folder: str | Path | None = None
) -> tuple[np.ndarray, str]:
    """Up to ``count`` real images the model never saw, and where they come from."""
    source, seed, trained_on = _training_source(training)
    if folder is not None:
        return image_folder(folder, size=size, limit=count, cache_dir=cache_dir), f"{folder} (--held-out)"
    if source == "avatars":
        images = load_dataset(source, count, size, seed, cache_dir, start=trained_on)
        return images, f"avatars {trained_on}..{trained_on + count - 1} of seed {seed} (after the training set)"
    if source == "lfw":
        raise ValueError("lfw: all of its 100 faces were used for training; pass --held-out FOLDER")
    if len(list_images(source)) <= trained_on:
        raise ValueError(f"{source}: no images after the {trained_on} used for training; pass --held-out FOLDER")
    images = image_folder(source, size=size, limit=count, cache_dir=cache_dir, start=trained_on)
    return images, f"{source}, images {trained_on}.. (after the training set)"


def held_out_labels(training: dict[str, Any], count: int, folder: str | Path | None = None) -> LabelTable | None:
    """The labels of ``held_out_images``' images (the same ones, in order), or None where they have none."""
    source, seed, trained_on = _training_source(training)
    if folder is not None:
        return load_labels(str(folder), count)
    return load_labels(source, count, seed, start=trained_on)


def condition_of(space: AttributeSpace, table: LabelTable) -> np.ndarray:
    """A label table's rows as a conditional model's one-hot attributes [N, space.dim], in the model's order.

    Raises ValueError when the table lacks an attribute of the model or has a value the model does not know.
    """
    codes = np.empty((len(table), len(space.names)), dtype=np.int64)
    names = list(table.values)
    for column, name in enumerate(space.names):
        if name not in table.values:
            raise ValueError(f"the held-out labels have no {name!r}")
        lookup = np.array([space.values[name].index(v) if v in space.values[name] else -1 for v in table.values[name]])
        codes[:, column] = lookup[table.codes[:, names.index(name)]]
        if (codes[:, column] < 0).any():
            raise ValueError(f"the held-out labels have values of {name!r} the model was not trained on")
    return space.one_hot(codes)


def _held_out_condition(generator: Generator, images: np.ndarray, folder: str | Path | None) -> tuple[np.ndarray | None, str]:
    if not generator.attributes:
        return None, ""
    table = held_out_labels(generator.training, len(images), folder)
    if table is None or len(table) != len(images):
        return None, "the held-out images have no labels to condition the decoder on"
    try:
        return condition_of(generator.attributes, table), ""
    except ValueError as exc:
        return None, str(exc)


def training_images(training: dict[str, Any], size: int, count: int, seed: int, cache_dir: str | Path) -> np.ndarray:
    """A seeded random subset of ``count`` training images (all of them if there are fewer)."""
    source, data_seed, trained_on = _training_source(training)
    images = load_dataset(source, trained_on, size, data_seed, cache_dir)
    order = np.random.default_rng(seed).permutation(len(images))[:count]
    return images[np.sort(order)]


def load_eval_data(
    generator: Generator, sizes: EvalSizes, held_out: str | Path | None = None, cache_dir: str | Path = "cache"
) -> EvalData:
    """Held-out images for two SWD sets, and training images for neighbours and the real near-duplicate rate."""
    size = generator.image_size
    want = max(2 * sizes.swd, sizes.prior_codes)
    images, where = held_out_images(generator.training, size, want, cache_dir, held_out)
    train = training_images(generator.training, size, max(sizes.train_neighbours, sizes.duplicates), sizes.seed, cache_dir)
    source, seed, trained_on = _training_source(generator.training)
    description = {
        "source": source,
        "seed": seed,
        "train_images": trained_on,
        "held_out": {"source": where, "images": len(images)},
        "train_subset": len(train),
    }
    condition, missing = _held_out_condition(generator, images, held_out)
    return EvalData(images, train, description, condition, missing)


class Timer:
    """Seconds per named stage."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        started = time.perf_counter()
        log.info("evaluate: %s", stage)
        yield
        self.seconds[stage] = round(time.perf_counter() - started, 2)


def swd_metrics(samples: np.ndarray, data: EvalData, sizes: EvalSizes) -> dict[str, Any]:
    """Sample SWD against held-out set A, and the floor: held-out set B against A."""
    n = sizes.swd
    a, b = data.held_out[:n], data.held_out[n : 2 * n]
    sample = sliced_wasserstein(samples[:n], a, per_image=sizes.patches, seed=sizes.seed)
    floor = sliced_wasserstein(b, a, per_image=sizes.patches, seed=sizes.seed)
    return {
        "images": n,
        "samples": sample.to_dict(),
        "floor": floor.to_dict(),
        "ratio_to_floor": sample.average / max(floor.average, 1e-12),
    }


def prior_fit_metrics(generator: Generator, data: EvalData, sizes: EvalSizes) -> dict[str, Any]:
    """MMD^2 with a permutation test, and per-dimension KS, of encoded held-out images against the prior."""
    codes = generator.encode(data.held_out[: sizes.prior_codes], sample=True, seed=sizes.seed)
    return {"available": True, "codes_are": generator.codes_description(sample=True), **codes_prior_fit(generator, codes, sizes)}


def codes_prior_fit(generator: Generator, codes: np.ndarray, sizes: EvalSizes) -> dict[str, Any]:
    """``prior_fit`` of any codes [N, latent_dim] against as many of the generator's prior samples (seed + 1)."""
    prior = generator.sample_z(len(codes), sizes.seed + 1)
    marginals = prior_marginals(generator.prior, generator.latent_dim)
    fit = prior_fit(codes.astype(np.float64), prior.astype(np.float64), sizes.permutations, sizes.seed, marginals)
    return fit.to_dict()


class LabelsUnavailable(RuntimeError):
    """A conditional model's reconstructions need the images' labels, and the held-out images have none."""


def reconstruction_inputs(generator: Generator, images: np.ndarray, condition: np.ndarray | None) -> np.ndarray:
    """Decode inputs that reconstruct images: their codes, and a conditional model's true attributes of them."""
    if generator.attributes and condition is None:
        raise LabelsUnavailable("a conditional model reconstructs from the images' own labels")
    return generator.with_condition(generator.encode(images), None if condition is None else condition[: len(images)])


def reconstruction_metrics(generator: Generator, data: EvalData, sizes: EvalSizes) -> dict[str, Any]:
    """Mean squared error (pixels in 0..1) of decode(encode(x)) (with x's own labels, conditional) on held-out images."""
    images = data.held_out[: sizes.prior_codes]
    rows = reconstruction_inputs(generator, images, data.held_out_condition)
    error = (generator.decode(rows).astype(np.float64) - images) / 255.0
    mse = float((error**2).mean())
    return {"available": True, "images": len(images), "mse": mse, "psnr_db": 10 * math.log10(1 / max(mse, 1e-12))}


def memorization_metrics(samples: np.ndarray, data: EvalData, sizes: EvalSizes) -> dict[str, Any]:
    """The Meehan et al. (2020) data-copying test: generated->train against held-out->train distances."""
    n = sizes.swd
    train = data.train[: sizes.train_neighbours]
    result = data_copying(samples[:n], train, data.held_out[:n]).to_dict()
    return {**result, "generated": n, "held_out": n, "train_neighbours": len(train), "metric": UNIQUENESS_METRIC}


def diversity_metrics(generator: Generator, samples: np.ndarray, data: EvalData, sizes: EvalSizes) -> dict[str, Any]:
    """Near-duplicate rate of samples under the threshold that ``unique`` jobs use, and of real images."""
    threshold = generator.uniqueness_threshold
    n = min(sizes.duplicates, len(samples))
    k = min(n, len(data.train))
    real: dict[str, Any] = {"images": k, "rate": near_duplicate_rate(data.train[:k], threshold)}
    if k != n:
        real["samples_rate_at_this_size"] = near_duplicate_rate(samples[:k], threshold)
    rate = near_duplicate_rate(samples[:n], threshold)
    return {"metric": UNIQUENESS_METRIC, "threshold": threshold, "samples": n, "rate": rate, "real_training_images": real}


def interpolation_metrics(generator: Generator, data: EvalData, sizes: EvalSizes) -> dict[str, Any]:
    """Midpoint SWD against endpoint SWD of random pairs, for slerp (the service's default) and lerp.

    For a conditional model the pairs of ``slerp`` and ``lerp`` share their attributes (the first face's): they
    test the latent space, where the point between two faces must be a face. ``slerp_attributes_blended`` walks
    pairs with attributes of their own, as ``/v1/interpolate`` does between two seeds: half-way, each attribute
    that differs is a 50/50 blend of two one-hot codes, which no training image had."""
    p = sizes.pairs
    z = generator.sample_inputs(2 * p, sizes.seed + 2)
    reference = data.held_out[:p]
    a, b, decode, between = z[:p], z[p:], generator.decode, generator.midpoints
    dim = generator.latent_dim
    b_held = np.concatenate([b[:, :dim], a[:, dim:]], axis=1) if generator.attributes else b
    slerp = interpolation_swd(decode, a, b_held, reference, "slerp", sizes.patches, sizes.seed, between=between)
    lerp = interpolation_swd(decode, a, b_held, reference, "lerp", sizes.patches, sizes.seed, slerp.endpoints, between)
    out: dict[str, Any] = {"pairs": p, "slerp": slerp.to_dict(), "lerp": lerp.to_dict()}
    if generator.attributes:
        out["attributes"] = "held: each pair shares the first face's attributes"
        # the endpoints are the faces a, as above: their SWD is reused
        blended = interpolation_swd(decode, a, b, reference, "slerp", sizes.patches, sizes.seed, slerp.endpoints, between)
        out["slerp_attributes_blended"] = blended.to_dict()
    return out


def _encoder_metrics(generator: Generator, data: EvalData, sizes: EvalSizes, timer: Timer) -> dict[str, Any]:
    try:
        with timer("prior_fit"):
            fit = prior_fit_metrics(generator, data, sizes)
        with timer("reconstruction"):
            reconstruction = reconstruction_metrics(generator, data, sizes)
    except EncoderUnavailable as exc:
        unavailable = {"available": False, "reason": f"no encoder: {exc}"}
        return {"prior_fit": unavailable, "reconstruction": unavailable}
    except LabelsUnavailable as exc:
        reconstruction = {"available": False, "reason": f"no labels: {exc}; {data.condition_missing}"}
    return {"prior_fit": fit, "reconstruction": reconstruction}


def _creator() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"synthgen {version('synthgen')}"
    except PackageNotFoundError:
        return "synthgen (not installed)"


def evaluate(generator: Generator, data: EvalData, sizes: EvalSizes) -> dict[str, Any]:
    """Every metric, as one JSON-ready dict (what ``metrics.json`` holds)."""
    sizes = sizes.fitted(len(data.held_out))
    timer = Timer()
    started = time.perf_counter()
    with timer("samples"):
        # unconditional samples: a conditional model's attributes are drawn from the training marginals
        samples = generator.decode(generator.sample_inputs(max(sizes.swd, sizes.duplicates), sizes.seed))
    with timer("swd"):
        swd = swd_metrics(samples, data, sizes)
    encoder = _encoder_metrics(generator, data, sizes, timer)
    with timer("memorization"):
        memorization = memorization_metrics(samples, data, sizes)
    with timer("diversity"):
        diversity = diversity_metrics(generator, samples, data, sizes)
    with timer("interpolation"):
        interpolation = interpolation_metrics(generator, data, sizes)
    return {
        "format": FORMAT,
        "model": generator.describe(),
        "training": generator.training,
        "data": data.description,
        "sizes": asdict(sizes),
        "encoder": generator.encoder_source,
        "swd": swd,
        **encoder,
        "memorization": memorization,
        "diversity": diversity,
        "interpolation": interpolation,
        "timing": {"seconds": timer.seconds, "total": round(time.perf_counter() - started, 1)},
        "created_by": _creator(),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write JSON atomically; NaN or infinity is refused (every metric must be a finite number)."""
    write_atomically(path, (json.dumps(data, indent=2, allow_nan=False) + "\n").encode())


def _read_baselines(path: str | Path | None) -> dict[str, Any] | None:
    if path is None:
        return None
    baselines: dict[str, Any] = json.loads(Path(path).read_text(encoding="utf-8"))
    if baselines.get("format") != COMPARE_FORMAT or "table" not in baselines:
        raise ValueError(f"{path}: not a comparison written by `synthgen evaluate --compare`")
    return baselines


def evaluate_into(
    generator: Generator,
    out: str | Path,
    sizes: EvalSizes = EvalSizes(),
    held_out: str | Path | None = None,
    cache_dir: str | Path = "cache",
    baselines: str | Path | None = None,
    control: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Evaluate a model and write its card into ``out``: ``metrics.json``, ``card.md`` and the PNG grids.

    ``control``: a conditional package's control metrics (``aae.control.package_control``), for the card.
    """
    from aae.card import render_card, write_grids

    started = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    comparison = _read_baselines(baselines)  # a bad path fails before minutes of work
    data = load_eval_data(generator, sizes, held_out, cache_dir)
    loaded = time.perf_counter()
    metrics = evaluate(generator, data, sizes)
    grids = time.perf_counter()
    files = write_grids(generator, data.held_out, out, sizes.seed, data.held_out_condition)
    metrics["files"] = {**files, "card": "card.md", "metrics": "metrics.json"}
    if control is not None:
        metrics["control"] = control
    seconds = metrics["timing"]["seconds"]
    seconds["data"], seconds["grids"] = round(loaded - started, 2), round(time.perf_counter() - grids, 2)
    metrics["timing"]["total"] = round(time.perf_counter() - started, 1)
    write_json(out / "metrics.json", metrics)
    baselines_path = Path(baselines).resolve() if baselines else None
    card = render_card(metrics, generator, files, out.resolve(), comparison, baselines_path)
    (out / "card.md").write_text(card, encoding="utf-8")
    return metrics
