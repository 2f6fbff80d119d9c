"""The privacy guard: generated faces must not reproduce a training face.

Metric: the RMS distance between 8x8 RGB thumbnails (area-averaged, rounded to 0..255, then scaled
to 0..1) of a generated image and of every training image. A model package may ship the training
set's thumbnails (``train_index.npz``) with a threshold calibrated at export: the 1st percentile of
the distances from training images to their nearest other training image. A job with
``novel: true`` only keeps candidates at least that far from every training image.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from synthgen.core.similarity import nearest_rms

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
    return nearest_rms(queries / 255.0, index / 255.0, exclude_self)


def calibrate(index: np.ndarray, samples: int = 2000, quantile: float = 0.01, seed: int = 0) -> float:
    """The given quantile of nearest-other-training-image distances (on a sample of the index)."""
    order = np.random.default_rng(seed).permutation(len(index))
    reordered = index[order]
    n = min(samples, len(index))
    return float(np.quantile(min_distances(reordered[:n], reordered, exclude_self=True), quantile))


class TrainingIndex:
    """The training thumbnails, scaled and with their norms computed once, for per-batch checks."""

    def __init__(self, thumbs: np.ndarray, threshold: float) -> None:
        self.thumbs = thumbs  # uint8 [M, 192]
        self.threshold = threshold
        self._reference = thumbs / 255.0
        self._norms = (self._reference * self._reference).sum(1)

    @classmethod
    def load(cls, path: Path, threshold: float) -> TrainingIndex:
        with np.load(path) as data:
            return cls(data["thumbnails"], threshold)

    def novel(self, images: np.ndarray) -> np.ndarray:
        """Boolean mask: which images are at least the threshold away from every training image."""
        distances = nearest_rms(thumbnails8(images) / 255.0, self._reference, reference_norms=self._norms)
        mask: np.ndarray = distances >= self.threshold
        return mask


def write_index(path: Path, thumbs: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.savez_compressed(f, thumbnails=thumbs)
