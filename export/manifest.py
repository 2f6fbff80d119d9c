"""The model package's ``manifest.json``, and the same metadata written into each ONNX graph."""

from __future__ import annotations

import json
import time
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as dist_version
from pathlib import Path
from typing import Any

from synthgen.core.attributes import AttributeSpace
from synthgen.core.package import ENCODER_LOG_VAR_OUTPUT, ENCODER_OUTPUT, ENCODER_SCALE_OUTPUT, MANIFEST_FORMAT, sha256_file


def _creator() -> str:
    try:
        return f"synthgen {dist_version('synthgen')}"
    except PackageNotFoundError:
        return "synthgen (not installed)"


def _graph_entry(file: str, input_name: str, output_name: str, input_dtype: str, output_dtype: str) -> dict[str, str]:
    return {
        "file": file,
        "input": input_name,
        "output": output_name,
        "input_dtype": input_dtype,
        "output_dtype": output_dtype,
        "layout": "NHWC",  # of the images, whichever side they are on
    }


def _decoder_entry(file: str, conditional: bool) -> dict[str, str]:
    entry = _graph_entry(file, "z", "images", "float32", "uint8")
    if conditional:
        entry["condition"] = "y"  # the one-hot attributes, float32 [B, condition_dim]
    return entry


def build_manifest(
    *,
    name: str,
    version: str,
    config: dict[str, Any],
    checkpoint_path: Path,
    training: dict[str, Any],
    parity: dict[str, Any],
    graph: dict[str, Any],
    uniqueness: dict[str, Any],
    with_encoder: bool,
    privacy: dict[str, Any] | None = None,
    attributes: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Everything but the file hashes, which ``write_manifest`` adds once the files are final.

    ``attributes``: a conditional model's ``AttributeSpace.to_manifest()`` (None: unconditional, no entry).
    """
    size = int(config["image_size"])
    manifest: dict[str, Any] = {
        "format": MANIFEST_FORMAT,
        "name": name,
        "version": version,
        "latent_dim": int(config["latent_dim"]),
        "prior": config["prior"],
        "image": {"height": size, "width": size, "channels": int(config["channels"])},
        "value_range": [0, 255],
        "decoder": _decoder_entry("decoder.onnx", attributes is not None),
        "decoder_fp16": _decoder_entry("decoder.fp16.onnx", attributes is not None),
        "checkpoint_sha256": sha256_file(checkpoint_path),
        "config": config,
        "training": training,
        "parity": parity,
        "graph": graph,
        "uniqueness": uniqueness,
        "created_by": _creator(),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if attributes is not None:
        manifest["attributes"] = attributes
    if privacy is not None:
        manifest["privacy"] = privacy
    if with_encoder:
        manifest["encoder"] = {
            "file": "encoder.onnx",
            "input": "images",
            "output": ENCODER_OUTPUT,
            "input_dtype": "uint8",
            "output_dtype": "float32",
            "layout": "NHWC",
        }
        if config.get("posterior") == "gaussian" and config.get("latent_calibrated"):
            manifest["encoder"]["scale_output"] = ENCODER_SCALE_OUTPUT
        elif config.get("posterior") == "gaussian":
            manifest["encoder"]["log_var_output"] = ENCODER_LOG_VAR_OUTPUT
    return manifest


def onnx_metadata(manifest: dict[str, Any], filename: str) -> dict[str, str]:
    """The metadata_props of one graph: enough to identify it and its package without the manifest.

    A conditional model's graphs also record ``synthgen.condition_dim``, the width of the decoder's ``y``.
    """
    metadata = {
        "synthgen.format": manifest["format"],
        "synthgen.name": manifest["name"],
        "synthgen.version": manifest["version"],
        "synthgen.file": filename,
        "synthgen.latent_dim": str(manifest["latent_dim"]),
        "synthgen.prior": json.dumps(manifest["prior"], sort_keys=True),
        "synthgen.image": json.dumps(manifest["image"], sort_keys=True),
        "synthgen.value_range": json.dumps(manifest["value_range"]),
        "synthgen.checkpoint_sha256": manifest["checkpoint_sha256"],
        "synthgen.uniqueness": json.dumps(manifest["uniqueness"], sort_keys=True),
        "synthgen.created_by": manifest["created_by"],
        "synthgen.created_at": manifest["created_at"],
    }
    if manifest.get("attributes"):
        metadata["synthgen.condition_dim"] = str(AttributeSpace.from_manifest(manifest["attributes"]).dim)
    return metadata


def write_manifest(path: Path, manifest: dict[str, Any], files: list[Path]) -> None:
    """Add the sha256 and size of every file, then write the manifest."""
    manifest["files"] = {f.name: {"sha256": sha256_file(f), "bytes": f.stat().st_size} for f in files}
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
