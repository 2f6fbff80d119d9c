"""Rendering samples: latents -> images -> encoded files with their metadata, for the worker, the API and the CLI."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from service.engine.registry import LoadedModel
from synthgen.core.images import DEFAULT_FORMAT, DEFAULT_PNG_LEVEL, DEFAULT_QUALITY, EXTENSIONS, encode_image
from synthgen.core.latents import slerp
from synthgen.core.webdataset import sample_meta, tar_sample

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RenderSpec:
    """What every image of a job shares."""

    seed: int
    truncation: float | None = None
    fmt: str = DEFAULT_FORMAT
    quality: int = DEFAULT_QUALITY
    png_compress_level: int = DEFAULT_PNG_LEVEL


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
