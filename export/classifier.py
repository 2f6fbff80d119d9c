"""The package's attribute classifier: ``classifier.onnx`` and its manifest entry.

The graph takes the package's images as they are served (input ``images``, uint8 [B, H, W, C]; the scaling
is in the graph) and gives ``probabilities`` float32 [B, condition_dim]: a softmax within each attribute's
block of columns, in ``AttributeSpace`` order. It is checked like every graph of a package (onnx.checker,
strict shape inference, parity against torch on real images), and its accuracy is measured with the graph
itself on the held-out real images its checkpoint names, over the labels those images show.

``export_classifier`` writes the graph into a package being built (``export_package(classifier=...)``);
``copy_classifier`` takes another package's graph instead (a new version of a model trained on the same
labels keeps its predecessor's judge), once its attributes, values and image shape fit, and measures it again; ``attach_classifier`` adds either to an existing package, which is
rewritten beside itself and swapped in only once it verifies.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from aae.classifier import AttributeClassifier, accuracy, block_softmax, held_out_set, load_classifier
from aae.labels import LabelTable
from export.graphs import ExportError, export_graph, write_metadata
from export.manifest import onnx_metadata, write_manifest
from export.parity import ParityReport, compare
from synthgen.core.attributes import AttributeSpace
from synthgen.core.package import load_package
from synthgen.core.predictions import predicted_codes

CLASSIFIER_FILE = "classifier.onnx"
CLASSIFIER_BOUND = 1e-4  # probability: fp32 ORT and torch agree to rounding


class ClassifierImageHead(nn.Module):
    """images [B, H, W, C] uint8 -> probabilities [B, condition_dim] float32, a softmax per attribute block."""

    def __init__(self, model: AttributeClassifier) -> None:
        super().__init__()
        self.model = model
        self.space = model.config.space

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.permute(0, 3, 1, 2).to(torch.float32) / 255.0
        return block_softmax(self.model(x), self.space)


def _check_fits(
    own_shape: tuple[int, int, int], own: AttributeSpace, image_shape: tuple[int, int, int], space: AttributeSpace
) -> None:
    if tuple(own_shape) != tuple(image_shape):
        raise ExportError(f"the classifier takes {tuple(own_shape)} images, the package's are {tuple(image_shape)}")
    # ordered: the service reads the classifier's output columns in the model's attribute order
    if space and not space.same_values(own):
        raise ExportError(
            "the classifier's attributes and values differ from the model's: train it on the model's data "
            f"(classifier {dict(own.values)}, model {dict(space.values)})"
        )


def _probabilities(path: Path, images: np.ndarray, batch: int = 256) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = [session.run(None, {"images": images[i : i + batch]})[0] for i in range(0, len(images), batch)]
    return np.concatenate(out)


def _graph_accuracy(path: Path, space: AttributeSpace, images: np.ndarray, table: LabelTable) -> dict[str, float]:
    """The graph's accuracy per attribute on labeled real images, over the labels they show."""
    return accuracy(space, predicted_codes(space, _probabilities(path, images))[0], table)


def classifier_entry(
    space: AttributeSpace, held_out: dict[str, Any], measured: dict[str, float], parity: ParityReport, training: dict[str, Any]
) -> dict[str, Any]:
    """The manifest's ``classifier`` entry."""
    return {
        "file": CLASSIFIER_FILE,
        "input": "images",
        "output": "probabilities",
        "input_dtype": "uint8",
        "output_dtype": "float32",
        "layout": "NHWC",
        "order": list(space.names),  # the output's blocks of columns, in order
        "values": {n: list(v) for n, v in space.values.items()},
        "accuracy": measured,
        "held_out": held_out,
        "parity": parity.to_dict(),
        "training": training,
    }


def export_classifier(
    checkpoint_path: str | Path,
    folder: Path,
    image_shape: tuple[int, int, int],
    space: AttributeSpace,
    cache_dir: str | None = None,
) -> dict[str, Any]:
    """Write ``classifier.onnx`` into ``folder``, check it, measure it; return its manifest entry.

    ``space``: the model's attributes (empty for an unconditional model); the classifier's must be the same.
    """
    model, checkpoint = load_classifier(checkpoint_path)
    config = model.config
    _check_fits((config.image_size, config.image_size, config.channels), config.space, image_shape, space)
    head = ClassifierImageHead(model).eval()
    path = folder / CLASSIFIER_FILE
    height, width, channels = image_shape
    export_graph(head, {"images": torch.zeros(2, height, width, channels, dtype=torch.uint8)}, "probabilities", path)
    held_out = dict(checkpoint["summary"]["held_out"])
    images, table = held_out_set(held_out, model.config.image_size, cache_dir)
    held_out["count"] = len(images)
    parity = compare(head, path, {"images": images}, CLASSIFIER_BOUND, "probability")
    if not parity.ok:
        raise ExportError(f"{parity.describe('classifier')}: exceeds its bound; package refused")
    own = model.config.space
    measured = _graph_accuracy(path, own, images, table)
    options = checkpoint["options"]
    training = {k: options[k] for k in ("data", "count", "seed", "start")} | {
        k: checkpoint["summary"][k] for k in ("steps", "images_seen")
    }
    return classifier_entry(own, held_out, measured, parity, training)


def copy_classifier(
    source_dir: str | Path,
    folder: Path,
    image_shape: tuple[int, int, int],
    space: AttributeSpace,
    cache_dir: str | None = None,
) -> dict[str, Any]:
    """Copy another package's ``classifier.onnx`` into ``folder`` once it fits; return its manifest entry.

    The source package's sha256 checks vouch for the graph; its accuracy is measured again, with the graph, on
    the held-out real images its entry names, under today's visibility rules (``aae.labels.hidden``). The entry
    keeps the source's parity and training records and says where it came from.
    """
    source = load_package(source_dir)
    if source.classifier_path is None:
        raise ExportError(f"{source.ref}: no classifier.onnx to copy")
    entry = dict(source.manifest["classifier"])
    own = AttributeSpace({name: tuple(entry["values"][name]) for name in entry["order"]})
    _check_fits(source.image_shape, own, image_shape, space)
    path = folder / CLASSIFIER_FILE
    shutil.copyfile(source.classifier_path, path)
    images, table = held_out_set(entry["held_out"], image_shape[0], cache_dir)
    measured = _graph_accuracy(path, own, images, table)
    return entry | {"accuracy": measured, "copied_from": source.ref}


def attach_classifier(package_dir: str | Path, source: str | Path, cache_dir: str | None = None) -> dict[str, Any]:
    """Add (or replace) the classifier of an existing package; returns its manifest entry.

    ``source``: a classifier checkpoint (``synthgen classifier train``), or another package whose classifier to copy.
    """
    out = Path(package_dir)
    package = load_package(out)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        shutil.copytree(out, staging, dirs_exist_ok=True)
        make = copy_classifier if Path(source).is_dir() else export_classifier
        entry = make(source, staging, package.image_shape, package.attributes, cache_dir)
        manifest = {k: v for k, v in package.manifest.items() if k != "files"} | {"classifier": entry}
        write_metadata(staging / CLASSIFIER_FILE, onnx_metadata(manifest, CLASSIFIER_FILE))
        names = sorted({*package.manifest["files"], CLASSIFIER_FILE})
        write_manifest(staging / "manifest.json", manifest, [staging / n for n in names])
        load_package(staging)
        staging.chmod(0o755)
        previous = out.with_name(f".{out.name}.previous")
        shutil.rmtree(previous, ignore_errors=True)
        out.replace(previous)
        staging.replace(out)
        shutil.rmtree(previous)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return entry
