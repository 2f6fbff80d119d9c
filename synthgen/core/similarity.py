"""Similarity of faces, the near-duplicate metric behind ``unique`` jobs: RMS distance between 16x16 RGB thumbnails, in [0, 1] units.

Two faces closer than a model's ``uniqueness.threshold`` (in its manifest) count as the same face.
Thumbnails ignore pixel-level noise and keep what a person sees at a glance: face shape, skin, hair
and colours. The threshold of a package is calibrated at export time on the decoder's own samples.
"""

from __future__ import annotations

import numpy as np

METRIC = "rms-thumbnail-16x16-rgb"
THUMBNAIL = 16
# A package's threshold is calibrated on the decoder's images of these prior latents (seed 1, indices 0..2047)
CALIBRATION_SAMPLES = 2048
CALIBRATION_SEED = 1


def thumbnails(images: np.ndarray) -> np.ndarray:
    """uint8 images [N, H, W, C] -> float32 embeddings [N, 16*16*C] in [0, 1], by area averaging."""
    N, H, W, C = images.shape  # count, height, width, channels
    assert H % THUMBNAIL == 0 and W % THUMBNAIL == 0, (H, W)
    fh, fw = H // THUMBNAIL, W // THUMBNAIL
    small = images.reshape(N, THUMBNAIL, fh, THUMBNAIL, fw, C).mean(axis=(2, 4), dtype=np.float32) / 255.0
    out: np.ndarray = small.reshape(N, -1).astype(np.float32)
    return out


def nearest_rms(
    queries: np.ndarray,
    reference: np.ndarray,
    exclude_self: bool = False,
    reference_norms: np.ndarray | None = None,
    block: int = 8192,
) -> np.ndarray:
    """For each query row, the RMS distance to its nearest reference row (float64, blocked over the reference).

    With ``exclude_self`` the queries are ``reference[:len(queries)]`` and each one skips its own row.
    ``reference_norms`` (the rows' squared norms) may be passed in when the reference is reused.
    """
    q, r = queries.astype(np.float64), reference.astype(np.float64)
    norms = (r * r).sum(1) if reference_norms is None else reference_norms
    q_norms = (q * q).sum(1)[:, None]
    best = np.full(len(q), np.inf)
    rows = np.arange(len(q))
    for start in range(0, len(r), block):
        d2 = np.maximum(q_norms + norms[None, start : start + block] - 2 * q @ r[start : start + block].T, 0.0)
        if exclude_self:
            inside = (rows >= start) & (rows < start + d2.shape[1])
            d2[rows[inside], rows[inside] - start] = np.inf
        best = np.minimum(best, d2.min(axis=1))
    out: np.ndarray = np.sqrt(best / q.shape[1])
    return out


def nearest_neighbour_distances(embeddings: np.ndarray) -> np.ndarray:
    """For each embedding, the RMS distance to its nearest other embedding."""
    return nearest_rms(embeddings, embeddings, exclude_self=True)


def calibrate_threshold(images: np.ndarray, quantile: float = 0.01) -> float:
    """The given quantile of nearest-neighbour distances among samples: rarer pairs are near-duplicates."""
    return float(np.quantile(nearest_neighbour_distances(thumbnails(images)), quantile))
