"""Rendering samples: latents -> images -> encoded files, shared by the worker and in-process generation."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from tqdm import tqdm

from service.encoders import EXTENSIONS, encode_image, sample_key, sample_meta, tar_sample
from service.latents import slerp
from service.registry import LoadedModel

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RenderSpec:
    """What every image of a job shares."""

    seed: int
    truncation: float | None = None
    fmt: str = "png"
    quality: int = 90
    png_compress_level: int = 1


@dataclass
class RenderedSample:
    index: int
    data: bytes  # the encoded image
    meta: dict[str, object]


def encode_samples(
    model: LoadedModel, spec: RenderSpec, indices: np.ndarray, z: np.ndarray, images: np.ndarray
) -> list[RenderedSample]:
    """Encode decoded images and attach each one's metadata."""
    pkg = model.package
    return [
        RenderedSample(
            int(i),
            encode_image(image, spec.fmt, spec.quality, spec.png_compress_level),
            sample_meta(int(i), spec.seed, latent, pkg.ref, pkg.sha256, spec.truncation),
        )
        for i, latent, image in zip(indices, z, images, strict=True)
    ]


def render(model: LoadedModel, spec: RenderSpec, indices: np.ndarray) -> list[RenderedSample]:
    """Decode and encode the given indices in one go."""
    z = model.latents(spec.seed, indices, spec.truncation)
    return encode_samples(model, spec, indices, z, model.decode(z))


def samples_to_tar(samples: list[RenderedSample], fmt: str) -> tuple[bytes, list[int]]:
    """Tar blocks of the samples, and the byte offset where each sample starts (plus the end)."""
    ext = EXTENSIONS[fmt]
    parts, offsets, pos = [], [], 0
    for s in samples:
        blob = tar_sample(s.index, ext, s.data, s.meta)
        offsets.append(pos)
        parts.append(blob)
        pos += len(blob)
    offsets.append(pos)
    return b"".join(parts), offsets


def encode_chunk(
    model: LoadedModel, spec: RenderSpec, indices: np.ndarray, z: np.ndarray, images: np.ndarray
) -> tuple[bytes, list[int]]:
    """A chunk's tar blocks and sample offsets, from its decoded images (runs in the encode pool)."""
    return samples_to_tar(encode_samples(model, spec, indices, z, images), spec.fmt)


def interpolation_latents(
    model: LoadedModel, ends: tuple[tuple[int, int], tuple[int, int]], steps: int, method: str, truncation: float | None
) -> tuple[np.ndarray, np.ndarray]:
    """Latents along the path between image (seed, index) ``ends[0]`` and ``ends[1]``, and each one's t."""
    (from_seed, from_index), (to_seed, to_index) = ends
    a = model.latents(from_seed, np.array([from_index]), truncation)[0]
    b = model.latents(to_seed, np.array([to_index]), truncation)[0]
    t = np.linspace(0.0, 1.0, steps)
    if method == "slerp":
        return slerp(a, b, t), t
    if method == "lerp":
        return ((1 - t)[:, None] * a + t[:, None] * b).astype(np.float32), t
    raise ValueError(f"method must be 'slerp' or 'lerp', got {method!r}")


def strip_image(images: np.ndarray) -> np.ndarray:
    """Images [N, H, W, C] side by side: one [H, N*W, C] strip."""
    N, H, W, C = images.shape  # steps, height, width, channels
    out: np.ndarray = images.transpose(1, 0, 2, 3).reshape(H, N * W, C)
    return out


def _batches(count: int, batch_size: int) -> Iterator[np.ndarray]:
    for start in range(0, count, batch_size):
        yield np.arange(start, min(count, start + batch_size), dtype=np.int64)


def generate_to_directory(
    model: LoadedModel,
    spec: RenderSpec,
    count: int,
    out_dir: str | Path,
    batch_size: int = 64,
    encode_threads: int = 2,
    progress: bool = True,
) -> Path:
    """In-process generation: ``{key}.{ext}`` files and ``manifest.jsonl`` in ``out_dir``.

    Encoding of batch k runs in a thread pool while batch k+1 is decoded.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ext = EXTENSIONS[spec.fmt]
    with (
        ThreadPoolExecutor(encode_threads) as pool,
        open(out / "manifest.jsonl", "w", encoding="utf-8") as manifest,
        tqdm(total=count, unit="img", desc="generating", disable=not progress) as bar,
    ):
        pending = None
        for indices in _batches(count, batch_size):
            z = model.latents(spec.seed, indices, spec.truncation)
            images = model.decode(z)
            if pending is not None:
                _write_samples(pending.result(), out, ext, manifest, bar)
            pending = pool.submit(encode_samples, model, spec, indices, z, images)
        if pending is not None:
            _write_samples(pending.result(), out, ext, manifest, bar)
    return out


def _write_samples(samples: list[RenderedSample], out: Path, ext: str, manifest: TextIO, bar: tqdm[Any]) -> None:
    for s in samples:
        name = f"{sample_key(s.index)}.{ext}"
        (out / name).write_bytes(s.data)
        manifest.write(json.dumps({"file": name, **s.meta}, separators=(",", ":")) + "\n")
    bar.update(len(samples))
