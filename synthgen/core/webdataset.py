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


def tarfile_header(name: str, size: int) -> bytes:
    """The member header as ``tarfile`` writes it (USTAR, mode 0644, mtime 0, owner 0:0): the reference
    that ``ustar_header`` is checked against."""
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = TAR_MTIME
    info.mode = 0o644
    return info.tobuf(format=tarfile.USTAR_FORMAT)


# The fields after name, mode, uid, gid, size and mtime are the same for every member: the checksum's
# placeholder (8 spaces), type "0" (a file), no link name, the USTAR magic and version, no owner names,
# empty device numbers (a file has none) and no name prefix. The header is those 500 bytes padded to one block.
_HEAD_FIXED = b"0000644\0" + b"0000000\0" * 2  # mode, uid, gid
_MTIME = b"%011o\0" % TAR_MTIME
_TAIL = b" " * 8 + b"0" + b"\0" * 100 + b"ustar\x0000" + b"\0" * (64 + 16 + 155)
_NAME_MAX = 100
_SIZE_MAX = 8**11 - 1  # what 11 octal digits hold (8 GiB): larger members need tarfile's base-256 field


def ustar_header(name: str, size: int) -> bytes:
    """``tarfile_header(name, size)``, byte for byte, built directly: tarfile's general code took most of the
    time of framing a sample."""
    raw = name.encode()
    if len(raw) >= _NAME_MAX or size > _SIZE_MAX or not raw.isascii():
        return tarfile_header(name, size)
    block = raw.ljust(_NAME_MAX, b"\0") + _HEAD_FIXED + b"%011o\0" % size + _MTIME + _TAIL
    block = block.ljust(BLOCK, b"\0")
    checksum = sum(block)  # the checksum field counts as 8 spaces, as it is now
    return block[:148] + b"%06o\0 " % checksum + block[156:]


def _tar_member(name: str, data: bytes) -> bytes:
    padding = (-len(data)) % tarfile.BLOCKSIZE
    return b"".join((ustar_header(name, len(data)), data, b"\0" * padding))


def tar_sample(index: int, ext: str, image_bytes: bytes, meta: dict[str, Any]) -> bytes:
    """The two tar members of one sample, ``{key}.{ext}`` and ``{key}.json``, as raw tar blocks."""
    key = sample_key(index)
    meta_bytes = json.dumps(meta, separators=(",", ":")).encode()
    return _tar_member(f"{key}.{ext}", image_bytes) + _tar_member(f"{key}.json", meta_bytes)


def tar_end() -> bytes:
    """End-of-archive: two zero blocks."""
    return TAR_END


def sample_meta(
    index: int,
    seed: int,
    latent: np.ndarray,
    model_ref: str,
    sha256: str,
    truncation: float | None,
    attributes: dict[str, str] | None = None,
    identity: int | None = None,
    predicted: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A sample's ``{key}.json``. ``attributes`` (what a conditional model was conditioned on), ``predicted``
    (the package's classifier on the image: ``{name: {"value", "confidence"}}``) and ``identity`` (in identity
    jobs) appear only when given, so an unconditional model's samples keep their bytes."""
    meta: dict[str, Any] = {
        "index": index,
        "seed": seed,
        "truncation": truncation,
        "latent": latent.tolist(),
        "model": model_ref,
        "sha256": sha256,
    }
    if attributes is not None:
        meta["attributes"] = attributes
    if predicted is not None:
        meta["predicted"] = predicted
    if identity is not None:
        meta["identity"] = identity
    return meta
