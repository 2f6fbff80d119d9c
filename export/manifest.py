"""The model package's ``manifest.json``: what the service needs to load and trust a decoder."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from service.model_package import MANIFEST_FORMAT, sha256_file


def build_manifest(
    *,
    name: str,
    version: str,
    config: dict[str, Any],
    files: list[Path],
    checkpoint_path: Path,
    training: dict[str, Any],
    parity: dict[str, Any],
) -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        creator = f"synthgen {dist_version('synthgen')}"
    except PackageNotFoundError:
        creator = "synthgen (not installed)"
    size = int(config["image_size"])
    return {
        "format": MANIFEST_FORMAT,
        "name": name,
        "version": version,
        "latent_dim": int(config["latent_dim"]),
        "prior": config["prior"],
        "image": {"height": size, "width": size, "channels": int(config["channels"])},
        "value_range": [0, 255],
        "decoder": {"file": "decoder.onnx", "input": "z", "output": "images", "layout": "NHWC", "dtype": "uint8"},
        "files": {f.name: {"sha256": sha256_file(f), "bytes": f.stat().st_size} for f in files},
        "checkpoint_sha256": sha256_file(checkpoint_path),
        "config": config,
        "training": training,
        "parity": parity,
        "created_by": creator,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def write_manifest(path: Path, manifest: dict[str, Any]) -> None:
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
