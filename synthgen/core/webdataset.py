"""The WebDataset tar layout of results: ``{key}.{ext}`` and ``{key}.json`` per sample, as raw tar blocks.

Members carry a fixed mtime and mode, so the tar bytes are a pure function of the images and their
metadata: a chunk computed twice (a retry, a redelivery) gives the same bytes.
"""

from __future__ import annotations

import json
import tarfile
from typing import Any

import numpy as np

TAR_MTIME = 0
BLOCK = tarfile.BLOCKSIZE
TAR_END = b"\0" * (2 * BLOCK)  # end of archive: two zero blocks


def sample_key(index: int) -> str:
    return f"{index:08d}"


def _tar_member(name: str, data: bytes) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = TAR_MTIME
    info.mode = 0o644
    header = info.tobuf(format=tarfile.USTAR_FORMAT)
    padding = (-len(data)) % tarfile.BLOCKSIZE
    return header + data + b"\0" * padding


def tar_sample(index: int, ext: str, image_bytes: bytes, meta: dict[str, Any]) -> bytes:
    """The two tar members of one sample, ``{key}.{ext}`` and ``{key}.json``, as raw tar blocks."""
    key = sample_key(index)
    meta_bytes = json.dumps(meta, separators=(",", ":")).encode()
    return _tar_member(f"{key}.{ext}", image_bytes) + _tar_member(f"{key}.json", meta_bytes)


def tar_end() -> bytes:
    """End-of-archive: two zero blocks."""
    return TAR_END


def sample_meta(
    index: int, seed: int, latent: np.ndarray, model_ref: str, sha256: str, truncation: float | None
) -> dict[str, Any]:
    return {
        "index": index,
        "seed": seed,
        "truncation": truncation,
        "latent": latent.tolist(),
        "model": model_ref,
        "sha256": sha256,
    }
