"""Rendering samples: decode rows -> images -> encoded files with their metadata, for the worker, the API and the CLI.

A decode row is the decoder's whole input (``LoadedModel.inputs``): ``z``, or ``[z | y]`` for a conditional
model, whose attributes come from the job's ``Crowd`` (an empty one draws them all from the training
marginals, from (seed, index)).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from service.engine.labeling import label_counts
from service.engine.registry import EVERYONE, LoadedModel
from synthgen.core.crowd import Crowd
from synthgen.core.images import DEFAULT_FORMAT, DEFAULT_PNG_LEVEL, DEFAULT_QUALITY, EXTENSIONS, encode_image
from synthgen.core.latents import interpolate_inputs
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
    crowd: Crowd = field(default=EVERYONE)  # who is in the job: attributes, quotas, identities
    count: int | None = None  # the job's image count: the quotas of a crowd's distribution need it
    labels: bool = True  # the package's classifier labels each image (``predicted``); False: no classifier run


def job_inputs(model: LoadedModel, spec: RenderSpec, indices: np.ndarray, sources: np.ndarray | None = None) -> np.ndarray:
    """The decode rows of images ``indices`` of a job (``sources``: see ``Crowd.latents``)."""
    return model.inputs(spec.seed, indices, spec.truncation, spec.crowd, spec.count, sources)


@dataclass
class RenderedSample:
    index: int
    data: bytes  # the encoded image
    meta: dict[str, object]


def encode_samples(
    model: LoadedModel, spec: RenderSpec, indices: np.ndarray, rows: np.ndarray, images: np.ndarray
) -> list[RenderedSample]:
    """Encode decoded images and attach each one's metadata (``rows``: what they were decoded from)."""
    pkg = model.package
    z, _ = model.split(rows)
    labels = model.labels(rows)
    identity = spec.crowd.identity_of(indices)
    identities = [None] * len(indices) if identity is None else [int(i) for i in identity]
    predicted = model.predict(images) if spec.labels else [None] * len(indices)
    return [
        RenderedSample(
            int(i),
            encode_image(image, spec.fmt, spec.quality, spec.png_compress_level),
            sample_meta(int(i), spec.seed, latent, pkg.ref, pkg.sha256, spec.truncation, attributes, who, labeled),
        )
        for i, latent, image, attributes, who, labeled in zip(indices, z, images, labels, identities, predicted, strict=True)
    ]


def render(model: LoadedModel, spec: RenderSpec, indices: np.ndarray) -> list[RenderedSample]:
    """Decode and encode the given indices in one go."""
    rows = job_inputs(model, spec, indices)
    return encode_samples(model, spec, indices, rows, model.decode(rows))


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


@dataclass(frozen=True)
class EncodedChunk:
    tar: bytes  # the samples' tar blocks
    offsets: list[int]  # where each sample starts, plus the end
    label_counts: dict[str, int]  # the chunk's predicted labels, for the job's histogram ({} without a classifier)


def chunk_of(samples: list[RenderedSample], fmt: str) -> EncodedChunk:
    """The tar blocks of a chunk's samples, with the counts of their predicted labels."""
    tar, offsets = samples_to_tar(samples, fmt)
    predicted = [s.meta["predicted"] for s in samples if "predicted" in s.meta]
    conditioned = [s.meta["attributes"] for s in samples if "predicted" in s.meta]
    return EncodedChunk(tar, offsets, label_counts(predicted, conditioned))  # type: ignore[arg-type]


def encode_chunk(model: LoadedModel, spec: RenderSpec, indices: np.ndarray, rows: np.ndarray, images: np.ndarray) -> EncodedChunk:
    """A chunk's tar blocks, sample offsets and label counts, from its decoded images (runs in the encode pool)."""
    return chunk_of(encode_samples(model, spec, indices, rows, images), spec.fmt)


def interpolation_latents(
    model: LoadedModel, ends: tuple[tuple[int, int], tuple[int, int]], steps: int, method: str, truncation: float | None
) -> tuple[np.ndarray, np.ndarray]:
    """Decode rows along the path between image (seed, index) ``ends[0]`` and ``ends[1]``, and each one's t.

    Each end is the row of that single image (a conditional model's attributes drawn from its (seed, index));
    z follows ``method`` and the one-hot attributes blend linearly (``interpolate_inputs``).
    """
    (from_seed, from_index), (to_seed, to_index) = ends
    a = model.inputs(from_seed, np.array([from_index]), truncation)[0]
    b = model.inputs(to_seed, np.array([to_index]), truncation)[0]
    t = np.linspace(0.0, 1.0, steps)
    return interpolate_inputs(a, b, t, method, model.package.latent_dim), t


def strip_image(images: np.ndarray) -> np.ndarray:
    """Images [N, H, W, C] side by side: one [H, N*W, C] strip."""
    N, H, W, C = images.shape  # steps, height, width, channels
    out: np.ndarray = images.transpose(1, 0, 2, 3).reshape(H, N * W, C)
    return out
