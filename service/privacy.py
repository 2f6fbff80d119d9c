"""The privacy guard: generated faces must not reproduce a training face.

Metric: the RMS distance between 8x8 RGB thumbnails (area-averaged, rounded to 0..255, then scaled
to 0..1) of a generated image and of every training image. A model package may ship the training
set's thumbnails (``train_index.npz``) with a threshold calibrated at export: the 1st percentile of
the distances from training images to their nearest other training image. A job with
``novel: true`` only keeps candidates at least that far from every training image.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

METRIC = "rms-thumbnail-8x8-rgb"
SIDE = 8


def thumbnails8(images: np.ndarray) -> np.ndarray:
    """uint8 images [N, H, W, C] -> uint8 thumbnails [N, 8*8*C]."""
    N, H, W, C = images.shape  # count, height, width, channels
    assert H % SIDE == 0 and W % SIDE == 0, (H, W)
    small = images.reshape(N, SIDE, H // SIDE, SIDE, W // SIDE, C).mean(axis=(2, 4), dtype=np.float64)
    out: np.ndarray = np.rint(small).astype(np.uint8).reshape(N, -1)
    return out


def min_distances(queries: np.ndarray, index: np.ndarray, exclude_self: bool = False) -> np.ndarray:
    """RMS distance (0..1 units) from each uint8 thumbnail in ``queries`` to its nearest one in ``index``."""
    q = queries.astype(np.float64) / 255.0
    best = np.full(len(q), np.inf)
    for start in range(0, len(index), 8192):
        block = index[start : start + 8192].astype(np.float64) / 255.0
        d2 = np.maximum((q * q).sum(1)[:, None] + (block * block).sum(1)[None, :] - 2 * q @ block.T, 0.0)
        if exclude_self:  # queries are index[0:len(q)]: skip each one's own row
            rows = np.arange(len(q))
            inside = (rows >= start) & (rows < start + len(block))
            d2[rows[inside], rows[inside] - start] = np.inf
        best = np.minimum(best, d2.min(axis=1))
    out: np.ndarray = np.sqrt(best / q.shape[1])
    return out


def calibrate(index: np.ndarray, samples: int = 2000, quantile: float = 0.01, seed: int = 0) -> float:
    """The given quantile of nearest-other-training-image distances (on a sample of the index)."""
    order = np.random.default_rng(seed).permutation(len(index))
    reordered = index[order]
    n = min(samples, len(index))
    return float(np.quantile(min_distances(reordered[:n], reordered, exclude_self=True), quantile))


@dataclass(frozen=True)
class TrainingIndex:
    thumbs: np.ndarray  # uint8 [M, 192]
    threshold: float

    @classmethod
    def load(cls, path: Path, threshold: float) -> TrainingIndex:
        with np.load(path) as data:
            return cls(data["thumbnails"], threshold)

    def novel(self, images: np.ndarray) -> np.ndarray:
        """Boolean mask: which images are at least the threshold away from every training image."""
        distances: np.ndarray = min_distances(thumbnails8(images), self.thumbs) >= self.threshold
        return distances


def write_index(path: Path, thumbs: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.savez_compressed(f, thumbnails=thumbs)
