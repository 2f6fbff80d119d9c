"""Labels on every image: the package's attribute classifier (``classifier.onnx``) run on decoded images.

The classifier takes the decoder's own output, uint8 images [B, H, W, C] named ``images``, and returns
``probabilities`` float32 [B, condition_dim]: a softmax within each attribute's block of columns, in
``AttributeSpace`` order. Per attribute, an image's predicted value is the most probable one and its
confidence that probability (``synthgen.core.predictions``). A worker labels each chunk in one batch and counts the
chunk's predicted values (``label_counts``) into the job's histogram, once per chunk.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnxruntime as ort

from synthgen.core.attributes import AttributeSpace
from synthgen.core.errors import ModelPackageError
from synthgen.core.package import ModelPackage
from synthgen.core.predictions import predicted_labels

log = logging.getLogger(__name__)
Predicted = dict[str, dict[str, Any]]  # {name: {"value": str, "confidence": float}}


def _value_key(name: str, value: str) -> str:
    return f"{name}={value}"  # attribute names and values never hold '=' or ':'


def _agreement_key(name: str) -> str:
    return f"agree:{name}"


def label_counts(predicted: Iterable[Predicted], conditioned: Iterable[dict[str, str]] | None) -> dict[str, int]:
    """A chunk's contribution to its job's histogram: ``{"name=value": images}`` per predicted value, and
    ``{"agree:name": images}``, the images predicted as the value they were conditioned on."""
    counts: Counter[str] = Counter()
    rows = list(predicted)
    for labels in rows:
        for name, entry in labels.items():
            counts[_value_key(name, entry["value"])] += 1
    if conditioned is not None:
        for labels, asked in zip(rows, conditioned, strict=True):
            for name, entry in labels.items():
                counts[_agreement_key(name)] += int(asked.get(name) == entry["value"])
    return dict(counts)


def histogram(counts: dict[str, int]) -> tuple[dict[str, dict[str, int]], dict[str, int]]:
    """A job's stored counts -> ({name: {value: images}}, {name: images predicted as conditioned})."""
    values: dict[str, dict[str, int]] = {}
    agreement: dict[str, int] = {}
    for key, n in counts.items():
        if key.startswith("agree:"):
            agreement[key.removeprefix("agree:")] = n
        else:
            name, value = key.split("=", 1)
            values.setdefault(name, {})[value] = n
    return values, agreement


@dataclass
class Labeler:
    """An onnxruntime session of a package's classifier; ``predict`` is thread-safe (ORT sessions are)."""

    session: ort.InferenceSession
    space: AttributeSpace

    @classmethod
    def open(cls, package: ModelPackage, space: AttributeSpace, providers: list[str]) -> Labeler | None:
        """The package's classifier on ``providers``; None when the package has none (or is unconditional)."""
        entry = package.manifest.get("classifier")
        if not entry or not space:
            return None
        path = package.path / str(entry["file"])
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # it runs in the encode pool, beside the encoders
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types for a bad graph
            raise ModelPackageError(f"{path}: onnxruntime cannot load it ({exc})") from exc
        inputs, outputs = session.get_inputs(), session.get_outputs()
        if [i.name for i in inputs] != ["images"] or [o.name for o in outputs] != ["probabilities"]:
            raise ModelPackageError(
                f"{path}: expected input images and output probabilities, got "
                f"{[i.name for i in inputs]} -> {[o.name for o in outputs]}"
            )
        if outputs[0].shape[1] != space.dim:
            raise ModelPackageError(f"{path}: expected probabilities [batch, {space.dim}], got {outputs[0].shape}")
        log.info("attribute classifier %s on %s", path, session.get_providers()[0])
        return cls(session, space)

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """uint8 images [B, H, W, C] -> float32 probabilities [B, condition_dim]."""
        out = self.session.run(["probabilities"], {"images": np.ascontiguousarray(images, dtype=np.uint8)})[0]
        return np.asarray(out, dtype=np.float32)

    def predict(self, images: np.ndarray) -> list[Predicted]:
        return predicted_labels(self.space, self.probabilities(images))
