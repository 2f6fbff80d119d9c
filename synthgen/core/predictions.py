"""Reading a package's attribute classifier: its ``probabilities`` [B, dim] -> the predicted value of each attribute.

The classifier's output has one block of columns per attribute, in ``AttributeSpace`` order, each block a
softmax over that attribute's values (the same layout as the decoder's one-hot condition). The prediction of
an attribute is the value with the largest probability in its block, and its confidence is that probability.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from synthgen.core.attributes import AttributeSpace


def predicted_codes(space: AttributeSpace, probabilities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(value indices int64 [B, len(names)], confidences float32 [B, len(names)]) of the classifier's output."""
    probabilities = np.asarray(probabilities, dtype=np.float32)
    if probabilities.ndim != 2 or probabilities.shape[1] != space.dim:
        raise ValueError(f"expected probabilities [B, {space.dim}], got {list(probabilities.shape)}")
    codes = np.empty((probabilities.shape[0], len(space.names)), dtype=np.int64)
    confidence = np.empty(codes.shape, dtype=np.float32)
    for column, (name, start) in enumerate(space.offsets().items()):
        block = probabilities[:, start : start + len(space.values[name])]
        codes[:, column] = block.argmax(axis=1)
        confidence[:, column] = block.max(axis=1)
    return codes, confidence


def predicted_labels(space: AttributeSpace, probabilities: np.ndarray) -> list[dict[str, dict[str, Any]]]:
    """One ``{name: {"value", "confidence"}}`` per image: the per-image ``predicted`` metadata."""
    codes, confidence = predicted_codes(space, probabilities)
    return [
        {
            name: {"value": space.values[name][int(c)], "confidence": round(float(p), 4)}
            for name, c, p in zip(space.names, row, conf, strict=True)
        }
        for row, conf in zip(codes, confidence, strict=True)
    ]
