"""The ONNX graphs of a package: the decoder (z -> uint8 NHWC images), its fp16 twin, and the encoder.

A conditional model's decoder takes a second input, ``y``: the one-hot attributes (AttributeSpace.one_hot).

Pre- and post-processing live inside the graphs, so the service only moves uint8 images and float32
latents. Every graph has named inputs and outputs, a dynamic batch axis, passes ``onnx.checker`` and
shape inference, and carries the package's metadata in ``metadata_props``.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from aae.model import AAE, images_uint8
from synthgen.core.package import ENCODER_LOG_VAR_OUTPUT, ENCODER_OUTPUT, ENCODER_SCALE_OUTPUT

log = logging.getLogger(__name__)
# torch's exporter logs every rewrite pass at INFO through these
for _noisy in ("onnxscript", "onnx_ir"):
    logging.getLogger(_noisy).setLevel(logging.WARNING)

OPSET = 21
MAX_BATCH = 1 << 20


class ExportError(RuntimeError):
    """The checkpoint cannot be turned into a package that the service can trust."""


class DecoderImageHead(nn.Module):
    """z [B, latent_dim] float32 (and, conditional, y [B, condition_dim]) -> images [B, H, W, C] uint8:
    scaling, rounding and NHWC are in the graph."""

    def __init__(self, model: AAE) -> None:
        super().__init__()
        self.decoder = model.decoder

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return images_uint8(self.decoder(z, y))  # [B, H, W, C]


def decoder_inputs(model: AAE) -> dict[str, torch.Tensor]:
    """Example inputs of the decoder graph, by name: ``z``, and ``y`` for a conditional model."""
    config = model.config
    examples = {"z": torch.zeros(2, config.latent_dim)}
    if config.condition_dim:
        examples["y"] = torch.zeros(2, config.condition_dim)
    return examples


def encoder_outputs(model: AAE) -> list[str]:
    """The encoder graph's outputs: the (mean) code, and beside it a gaussian posterior's log-variance, or its scale
    matrix once a latent calibration has rotated it."""
    if not model.encoder.gaussian:
        return [ENCODER_OUTPUT]
    return [ENCODER_OUTPUT, ENCODER_SCALE_OUTPUT if model.encoder.calibrated else ENCODER_LOG_VAR_OUTPUT]


class EncoderImageHead(nn.Module):
    """images [B, H, W, C] uint8 -> z [B, latent_dim] float32, the inverse direction of the decoder head.

    An AAE with a gaussian posterior also gives the log-variance of q(z|x) (``z_log_var``), or after a latent
    calibration its scale matrix (``z_scale``), so that tools without torch can draw z ~ q(z|x) as well as take its
    mean.
    """

    def __init__(self, model: AAE) -> None:
        super().__init__()
        self.encoder = model.encoder

    def forward(self, images: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        x = images.permute(0, 3, 1, 2).to(torch.float32) / 255.0  # [B, C, H, W] in [0, 1]
        if self.encoder.gaussian and self.encoder.calibrated:
            mean, scale = self.encoder.posterior(x)
            assert scale is not None
            return mean, scale
        if self.encoder.gaussian:
            mean, log_var = self.encoder.distribution(x)
            assert log_var is not None
            return mean, log_var
        z: torch.Tensor = self.encoder(x)
        return z


@dataclass
class GraphStats:
    nodes: int
    nodes_simplified: int
    simplified: bool  # whether the simplified graph was kept
    seconds_per_batch: float  # ORT CPU time of a 64-latent batch, before simplification
    seconds_per_batch_simplified: float

    def to_dict(self) -> dict[str, object]:
        return dict(vars(self))


def export_graph(module: nn.Module, examples: dict[str, torch.Tensor], output_name: str | list[str], path: Path) -> None:
    """Export with torch's torch.export-based exporter and check the result.

    ``examples``: one example tensor per graph input, by name, in the order of ``module.forward``'s arguments;
    every input shares the dynamic batch axis 0. ``output_name``: one name, or one per output of a module that
    returns a tuple.
    """
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    with warnings.catch_warnings():
        # torch's exporter warns about its own internals; none of it concerns this graph
        for category in (FutureWarning, DeprecationWarning, UserWarning):
            warnings.simplefilter("ignore", category=category)
        program = torch.onnx.export(
            module.eval(),
            tuple(examples.values()),
            input_names=list(examples),
            output_names=[output_name] if isinstance(output_name, str) else output_name,
            dynamic_shapes=tuple({0: batch} for _ in examples),  # every argument's axis 0
            opset_version=OPSET,
            dynamo=True,
            verbose=False,
        )
    if program is None:
        raise ExportError("torch.onnx.export returned no program")
    program.save(str(path))
    check_graph(path)


def check_graph(path: Path) -> onnx.ModelProto:
    """onnx.checker plus strict shape inference; raises ExportError naming the file."""
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model, full_check=True)
        return onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    except Exception as exc:  # onnx raises several unrelated exception types
        raise ExportError(f"{path.name}: not a valid ONNX graph ({exc})") from exc


def _time_batch(path: Path, feed: dict[str, np.ndarray], repeats: int = 5) -> float:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    session.run(None, feed)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        session.run(None, feed)
        best = min(best, time.perf_counter() - started)
    return best


def simplify_if_it_helps(path: Path, feed: dict[str, np.ndarray]) -> GraphStats:
    """Run onnxslim; keep its graph only when it has fewer nodes and is not slower."""
    import onnxslim

    model = onnx.load(str(path))
    before = _time_batch(path, feed)
    candidate = path.with_suffix(".slim.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        onnx.save(onnxslim.slim(model), str(candidate))
    slim = onnx.load(str(candidate))
    after = _time_batch(candidate, feed)
    keep = len(slim.graph.node) < len(model.graph.node) and after <= before * 1.05
    if keep:
        candidate.replace(path)
        check_graph(path)
    else:
        candidate.unlink()
    log.info("graph %s: %d nodes, %d simplified (kept: %s)", path.name, len(model.graph.node), len(slim.graph.node), keep)
    return GraphStats(len(model.graph.node), len(slim.graph.node), keep, before, after)


def convert_fp16(src: Path, dst: Path) -> None:
    """An fp16 copy of a graph whose inputs and outputs keep their types (float32 z and y, uint8 images)."""
    from onnxconverter_common import float16

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = float16.convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    onnx.save(model, str(dst))
    check_graph(dst)


def write_metadata(path: Path, metadata: dict[str, str]) -> None:
    """Replace the graph's metadata_props with ``metadata``."""
    model = onnx.load(str(path))
    del model.metadata_props[:]
    for key, value in sorted(metadata.items()):
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))


def read_metadata(path: Path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
