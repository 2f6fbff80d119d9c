"""A model package with an attribute classifier, for tests of the labels the service puts on every image.

``add_classifier(package, out)`` copies a conditional package and ships a small ONNX classifier in it, as
the package contract says (``classifier.onnx``: input ``images`` uint8 [B, H, W, C], output
``probabilities`` float32 [B, condition_dim], a softmax within each attribute's block), with its
manifest entry and sha256. The graph is fixed, not trained: the mean colour of the image times a seeded
random matrix, then a softmax per block. Its predictions depend on the image, so they vary across a
crowd, and the tests compare the service's labels with the same graph run on the decoded images.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np

CLASSIFIER_FILE = "classifier.onnx"


def classifier_graph(channels: int, blocks: list[int], seed: int = 0) -> bytes:
    """images uint8 [B, H, W, C] -> probabilities float32 [B, sum(blocks)], a softmax within each block."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    weights = (rng.normal(size=(channels, sum(blocks))) * 40).astype(np.float32)
    nodes = [
        helper.make_node("Cast", ["images"], ["pixels"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["pixels", "axes"], ["mean"], keepdims=0),  # [B, C]
        helper.make_node("Div", ["mean", "scale"], ["colour"]),
        helper.make_node("MatMul", ["colour", "weights"], ["logits"]),
        helper.make_node("Split", ["logits", "sizes"], [f"block{i}" for i in range(len(blocks))], axis=1),
    ]
    for i in range(len(blocks)):
        nodes.append(helper.make_node("Softmax", [f"block{i}"], [f"soft{i}"], axis=1))
    nodes.append(helper.make_node("Concat", [f"soft{i}" for i in range(len(blocks))], ["probabilities"], axis=1))
    initializers = [
        numpy_helper.from_array(np.array([1, 2], dtype=np.int64), "axes"),
        numpy_helper.from_array(np.array(255.0, dtype=np.float32), "scale"),
        numpy_helper.from_array(weights, "weights"),
        numpy_helper.from_array(np.array(blocks, dtype=np.int64), "sizes"),
    ]
    graph = helper.make_graph(
        nodes,
        "classifier",
        [helper.make_tensor_value_info("images", TensorProto.UINT8, ["batch", None, None, channels])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", sum(blocks)])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return bytes(model.SerializeToString())


def add_classifier(package: Path, out: Path) -> Path:
    """A copy of ``package`` at ``out`` with a classifier; returns ``out``."""
    shutil.copytree(package, out)
    manifest = json.loads((out / "manifest.json").read_text())
    names = list(manifest["attributes"]["order"])
    blocks = [len(manifest["attributes"]["values"][name]) for name in names]
    graph = classifier_graph(int(manifest["image"]["channels"]), blocks)
    (out / CLASSIFIER_FILE).write_bytes(graph)
    manifest["files"][CLASSIFIER_FILE] = {"sha256": hashlib.sha256(graph).hexdigest(), "bytes": len(graph)}
    manifest["classifier"] = {
        "file": CLASSIFIER_FILE,
        "input": "images",
        "output": "probabilities",
        "order": names,
        "values": manifest["attributes"]["values"],
        "accuracy": dict.fromkeys(names, 0.5),
        "held_out": {"data": "none: a fixed random graph for tests", "count": 1},
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return out
