"""The near-duplicate metric: RMS distance between 16x16 RGB thumbnails, in [0, 1] units.

Two faces closer than a model's ``uniqueness.threshold`` (in its manifest) count as the same face.
Thumbnails ignore pixel-level noise and keep what a person sees at a glance: face shape, skin, hair
and colours. The threshold of a package is calibrated at export time on the decoder's own samples.
"""

from __future__ import annotations

import numpy as np

METRIC = "rms-thumbnail-16x16-rgb"
THUMBNAIL = 16


def thumbnails(images: np.ndarray) -> np.ndarray:
    """uint8 images [N, H, W, C] -> float32 embeddings [N, 16*16*C] in [0, 1], by area averaging."""
    N, H, W, C = images.shape  # count, height, width, channels
    assert H % THUMBNAIL == 0 and W % THUMBNAIL == 0, (H, W)
    fh, fw = H // THUMBNAIL, W // THUMBNAIL
    small = images.reshape(N, THUMBNAIL, fh, THUMBNAIL, fw, C).mean(axis=(2, 4), dtype=np.float32) / 255.0
    out: np.ndarray = small.reshape(N, -1).astype(np.float32)
    return out


def nearest_neighbour_distances(embeddings: np.ndarray) -> np.ndarray:
    """For each embedding, the RMS distance to its nearest other embedding."""
    x = embeddings.astype(np.float64)
    sq = (x * x).sum(axis=1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * x @ x.T, 0.0)
    np.fill_diagonal(d2, np.inf)
    rms: np.ndarray = np.sqrt(d2.min(axis=1) / x.shape[1])
    return rms


def calibrate_threshold(images: np.ndarray, quantile: float = 0.01) -> float:
    """The given quantile of nearest-neighbour distances among samples: rarer pairs are near-duplicates."""
    return float(np.quantile(nearest_neighbour_distances(thumbnails(images)), quantile))
