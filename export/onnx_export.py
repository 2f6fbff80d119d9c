"""Torch checkpoint -> model package: ``decoder.onnx`` (z -> uint8 NHWC images) and ``manifest.json``.

The package is written to a temporary folder next to its destination and moved into place only after
onnxruntime has been checked against torch, so a refused export never leaves a package behind.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from aae.model import AAE, load_checkpoint
from export.manifest import build_manifest, write_manifest

log = logging.getLogger(__name__)

OPSET = 18
PARITY_BOUND_GREY_LEVELS = 1
PARITY_LATENTS = 1024


class ExportError(RuntimeError):
    """The checkpoint cannot be turned into a package that the service can trust."""


class DecoderImageHead(nn.Module):
    """Decoder plus post-processing, so the graph itself emits displayable uint8 NHWC images."""

    def __init__(self, model: AAE) -> None:
        super().__init__()
        self.decoder = model.decoder

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.decoder(z)  # [B, C, H, W] in [0, 1]
        x = torch.clamp(torch.round(x * 255.0), 0.0, 255.0)
        return x.permute(0, 2, 3, 1).to(torch.uint8)  # [B, H, W, C]


@dataclass
class ParityReport:
    latents: int
    max_error: int  # grey levels
    mean_error: float
    mismatched_fraction: float  # fraction of pixel values that differ at all
    bound: int

    @property
    def ok(self) -> bool:
        return self.max_error <= self.bound

    def to_dict(self) -> dict[str, Any]:
        return {
            "latents": self.latents,
            "max_error": self.max_error,
            "mean_error": self.mean_error,
            "mismatched_fraction": self.mismatched_fraction,
            "bound": self.bound,
        }


def export_onnx(head: DecoderImageHead, latent_dim: int, path: Path) -> None:
    """Export with torch's torch.export-based exporter, a dynamic batch axis and named input/output."""
    z = torch.zeros(2, latent_dim)
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    with warnings.catch_warnings():
        # torch's exporter warns about its own internals; none of it concerns this graph
        warnings.simplefilter("ignore", category=FutureWarning)
        warnings.simplefilter("ignore", category=DeprecationWarning)
        warnings.simplefilter("ignore", category=UserWarning)
        program = torch.onnx.export(
            head,
            (z,),
            input_names=["z"],  # float32 [batch, latent_dim]
            output_names=["images"],  # uint8 [batch, H, W, C]
            dynamic_shapes={"z": {0: batch}},
            opset_version=OPSET,
            dynamo=True,
            verbose=False,
        )
    if program is None:
        raise ExportError("torch.onnx.export returned no program")
    program.save(str(path))
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)


def parity_check(head: DecoderImageHead, onnx_path: Path, latent_dim: int, count: int = PARITY_LATENTS) -> ParityReport:
    """Compare onnxruntime with torch on ``count`` random latents, a quarter of them extreme (|z| up to 4)."""
    rng = np.random.default_rng(0)
    z = rng.standard_normal((count, latent_dim)).astype(np.float32)
    z[: count // 4] = rng.uniform(-4, 4, (count // 4, latent_dim)).astype(np.float32)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    errors = []
    for batch in (1, 7, 64, 256):
        part = z[: max(batch, 64)] if batch < 64 else z
        got = np.concatenate([session.run(["images"], {"z": part[i : i + batch]})[0] for i in range(0, len(part), batch)])
        with torch.no_grad():
            want = head(torch.from_numpy(part)).numpy()
        errors.append(np.abs(got.astype(np.int16) - want.astype(np.int16)).ravel())
    err = np.concatenate(errors)
    return ParityReport(
        latents=count,
        max_error=int(err.max()),
        mean_error=float(err.mean()),
        mismatched_fraction=float((err > 0).mean()),
        bound=PARITY_BOUND_GREY_LEVELS,
    )


def export_package(checkpoint_path: str | Path, out_dir: str | Path, name: str | None = None, version: str = "1") -> Path:
    """Export a trained checkpoint to a model package at ``out_dir``; refuse it if parity fails."""
    out = Path(out_dir)
    name = name or out.name
    model, checkpoint = load_checkpoint(str(checkpoint_path))
    head = DecoderImageHead(model).eval()
    config = model.config
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        export_onnx(head, config.latent_dim, staging / "decoder.onnx")
        report = parity_check(head, staging / "decoder.onnx", config.latent_dim)
        log.info("parity: max %d grey levels, mean %.5f", report.max_error, report.mean_error)
        if not report.ok:
            raise ExportError(
                f"onnxruntime and torch disagree by up to {report.max_error} grey levels (bound {report.bound}); package refused"
            )
        manifest = build_manifest(
            name=name,
            version=version,
            config=config.to_dict(),
            files=[staging / "decoder.onnx"],
            checkpoint_path=Path(checkpoint_path),
            training=checkpoint.get("summary", {}),
            parity=report.to_dict(),
        )
        write_manifest(staging / "manifest.json", manifest)
        if out.exists():
            shutil.rmtree(out)
        staging.chmod(0o755)  # mkdtemp makes it private; a package is meant to be shared
        staging.replace(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out
