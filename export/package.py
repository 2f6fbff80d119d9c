"""Torch checkpoint -> model package, and re-verification of an existing package.

A package is a folder: ``decoder.onnx``, ``decoder.fp16.onnx``, optionally ``encoder.onnx``,
``samples.png`` and ``manifest.json``. It is written to a staging folder beside its destination and
moved into place only after every parity check has passed, so a refused export leaves nothing behind.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import torch

from aae.data import image_grid, load_dataset
from aae.model import AAE, exported_decoder, load_checkpoint
from export.classifier import export_classifier
from export.graphs import (
    OPSET,
    DecoderImageHead,
    EncoderImageHead,
    ExportError,
    GraphStats,
    check_graph,
    convert_fp16,
    decoder_inputs,
    encoder_outputs,
    export_graph,
    read_metadata,
    simplify_if_it_helps,
    write_metadata,
)
from export.manifest import build_manifest, onnx_metadata, write_manifest
from export.parity import (
    DECODER_BOUND,
    DECODER_FP16_BOUND,
    ENCODER_BOUND,
    ParityReport,
    compare,
    compare_onnx,
    decoder_feeds,
)
from synthgen.core.crowd import Crowd
from synthgen.core.package import ModelPackage, graph_metadata_mismatch, load_package
from synthgen.core.privacy import METRIC as PRIVACY_METRIC
from synthgen.core.privacy import calibrate, thumbnails8, write_index
from synthgen.core.similarity import CALIBRATION_SAMPLES, CALIBRATION_SEED, METRIC, calibrate_threshold

log = logging.getLogger(__name__)


@dataclass
class ExportResult:
    path: Path
    parity: dict[str, ParityReport] = field(default_factory=dict)
    graph: GraphStats | None = None


def _check(report: ParityReport, what: str) -> ParityReport:
    log.info("%s", report.describe(what))
    if not report.ok:
        raise ExportError(f"{report.describe(what)}: exceeds its bound; package refused")
    return report


def _export_graphs(model: AAE, staging: Path, with_encoder: bool) -> tuple[dict[str, ParityReport], GraphStats]:
    config = model.config
    feeds = decoder_feeds(config.latent_dim, config.attribute_space, std=float(config.prior.get("std", 1.0)))
    decoder = DecoderImageHead(model).eval()
    export_graph(decoder, decoder_inputs(model), "images", staging / "decoder.onnx")
    stats = simplify_if_it_helps(staging / "decoder.onnx", {name: x[:64] for name, x in feeds.items()})
    parity = {"decoder": _check(compare(decoder, staging / "decoder.onnx", feeds, DECODER_BOUND, "grey levels"), "decoder")}
    convert_fp16(staging / "decoder.onnx", staging / "decoder.fp16.onnx")
    parity["decoder_fp16"] = _check(
        compare(decoder, staging / "decoder.fp16.onnx", feeds, DECODER_FP16_BOUND, "grey levels"), "decoder fp16"
    )
    if with_encoder:
        encoder = EncoderImageHead(model).eval()
        size = config.image_size
        example = torch.zeros(2, size, size, config.channels, dtype=torch.uint8)
        export_graph(encoder, {"images": example}, encoder_outputs(model), staging / "encoder.onnx")
        with torch.no_grad():
            images = decoder(*(torch.from_numpy(x) for x in feeds.values())).numpy()
        parity["encoder"] = _check(
            compare(encoder, staging / "encoder.onnx", {"images": images}, ENCODER_BOUND, "latent units"), "encoder"
        )
    return parity, stats


def _samples(model: AAE, staging: Path) -> np.ndarray:
    """Decode prior samples: a grid for people, and the calibration set of the uniqueness threshold.

    They are images 0, 1, ... of a job of seed CALIBRATION_SEED: a conditional model's attributes are drawn
    from the training marginals, as for a job that names none.
    """
    config, crowd, indices = model.config, Crowd(), np.arange(CALIBRATION_SAMPLES)
    inputs = [torch.from_numpy(crowd.latents(config.prior, CALIBRATION_SEED, indices, config.latent_dim, None))]
    space = config.attribute_space
    if space:
        inputs.append(torch.from_numpy(space.one_hot(crowd.codes(space, CALIBRATION_SEED, len(indices), indices))))
    with torch.no_grad():
        images: np.ndarray = DecoderImageHead(model).eval()(*inputs).numpy()
    image_grid(images[:64], columns=8).save(staging / "samples.png")
    return images


@dataclass
class TrainingData:
    """Where the training images come from, for the privacy guard's index (see synthgen/core/privacy.py)."""

    source: str  # "avatars", "lfw", or a folder of images
    count: int = 30000
    seed: int = 0
    cache_dir: str = "cache"


def _privacy_index(model: AAE, data: TrainingData, staging: Path) -> dict[str, object]:
    images = load_dataset(data.source, data.count, model.config.image_size, data.seed, data.cache_dir)
    thumbs = thumbnails8(images)
    write_index(staging / "train_index.npz", thumbs)
    threshold = calibrate(thumbs)
    log.info("privacy index: %d training images, threshold %.4f", len(thumbs), threshold)
    return {
        "file": "train_index.npz",
        "metric": PRIVACY_METRIC,
        "threshold": threshold,
        "images": len(thumbs),
        "calibration": {"quantile": 0.01, "of": "distances from training images to their nearest other training image"},
        "data": {"source": data.source, "count": data.count, "seed": data.seed},
    }


def export_package(
    checkpoint_path: str | Path,
    out_dir: str | Path,
    name: str | None = None,
    version: str = "1",
    with_encoder: bool = True,
    training_data: TrainingData | None = None,
    decoder: str = "auto",
    classifier: str | Path | None = None,
) -> ExportResult:
    """Export a trained checkpoint to a model package at ``out_dir``; refuse it if any parity check fails.

    ``decoder``: "auto" (the checkpoint's choice), "ema" or "live" weights; the manifest's training summary
    records which one as ``decoder_exported``. ``classifier``: a classifier checkpoint (aae/classifier.py) to
    ship as ``classifier.onnx``.
    """
    out = Path(out_dir)
    name = name or out.name
    model, checkpoint = load_checkpoint(str(checkpoint_path), decoder=decoder)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        parity, stats = _export_graphs(model, staging, with_encoder)
        shape = (model.config.image_size, model.config.image_size, model.config.channels)
        attributes = model.config.attribute_space
        classifier_entry = export_classifier(classifier, staging, shape, attributes) if classifier else None
        samples = _samples(model, staging)
        uniqueness = {
            "metric": METRIC,
            "threshold": calibrate_threshold(samples),
            "calibration": {"samples": len(samples), "quantile": 0.01, "of": "nearest-neighbour distances between samples"},
        }
        privacy = _privacy_index(model, training_data, staging) if training_data else None
        files = sorted(p for p in staging.iterdir() if p.suffix in (".onnx", ".png", ".npz"))
        manifest = build_manifest(
            name=name,
            version=version,
            config=model.config.to_dict(),
            checkpoint_path=Path(checkpoint_path),
            training={**checkpoint.get("summary", {}), "decoder_exported": exported_decoder(checkpoint, decoder)},
            parity={k: v.to_dict() for k, v in parity.items()},
            graph={"opset": OPSET, **stats.to_dict()},
            uniqueness=uniqueness,
            with_encoder=with_encoder,
            privacy=privacy,
            attributes=model.config.attribute_space.to_manifest() if model.config.attribute_space else None,
        )
        if classifier_entry is not None:
            manifest["classifier"] = classifier_entry
        for graph in (p for p in files if p.suffix == ".onnx"):
            write_metadata(graph, onnx_metadata(manifest, graph.name))
        write_manifest(staging / "manifest.json", manifest, files)
        load_package(staging)  # the package must pass the checks every reader makes
        if out.exists():
            shutil.rmtree(out)
        staging.chmod(0o755)  # mkdtemp makes it private; a package is meant to be shared
        staging.replace(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return ExportResult(out, parity, stats)


def verify_package(path: str | Path, checkpoint_path: str | Path | None = None) -> list[str]:
    """Re-check a package: schema, sha256s, ONNX validity, metadata, and parity. Returns report lines."""
    package: ModelPackage = load_package(path)  # schema, sizes and sha256s; raises ModelPackageError
    lines = [f"{package.ref}: manifest valid, {len(package.manifest['files'])} files match their sha256"]
    graphs = [
        package.path / package.manifest[k]["file"]
        for k in ("decoder", "decoder_fp16", "encoder", "classifier")
        if k in package.manifest
    ]
    for graph in graphs:
        check_graph(graph)
        wrong = graph_metadata_mismatch(package, read_metadata(graph))
        if wrong:
            raise ExportError(f"{graph}: graph metadata {wrong} does not match manifest {package.ref}")
    feeds = decoder_feeds(package.latent_dim, package.attributes, std=package.prior_std)
    for graph in (package.path / package.manifest[k]["file"] for k in ("decoder", "decoder_fp16") if k in package.manifest):
        names = [i.name for i in onnx.load(str(graph), load_external_data=False).graph.input]
        if names != list(feeds):
            raise ExportError(f"{graph}: inputs {names}, the manifest's attributes need {list(feeds)}")
    lines.append(f"{len(graphs)} graphs pass onnx.checker and carry matching metadata; decoder inputs {list(feeds)}")
    if checkpoint_path is not None:
        exported = package.manifest.get("training", {}).get("decoder_exported", "auto")
        model, _ = load_checkpoint(str(checkpoint_path), decoder=exported)
        space = model.config.attribute_space
        if (dict(space.values), space.identity) != (dict(package.attributes.values), package.attributes.identity):
            raise ExportError(f"{checkpoint_path}: its attributes differ from the manifest's of {package.ref}")
        head = DecoderImageHead(model)
        lines.append(
            _check(compare(head, package.decoder_path, feeds, DECODER_BOUND, "grey levels"), "decoder vs torch").describe(
                "decoder vs torch"
            )
        )
    if "decoder_fp16" in package.manifest:
        fp16 = package.path / package.manifest["decoder_fp16"]["file"]
        report = _check(compare_onnx(package.decoder_path, fp16, feeds, DECODER_FP16_BOUND, "grey levels"), "fp16 vs fp32")
        lines.append(report.describe("decoder fp16 vs fp32"))
    return lines


def describe_result(result: ExportResult) -> str:
    parts = [f"model package: {result.path}"]
    parts += [report.describe(what) for what, report in result.parity.items()]
    if result.graph is not None:
        parts.append(f"graph: {json.dumps(result.graph.to_dict())}")
    return "\n".join(parts)
