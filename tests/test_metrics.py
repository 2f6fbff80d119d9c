"""The sample-quality metrics on data whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("scipy")
pytest.importorskip("python_avatars")

from aae.data import avatar_faces
from aae.metrics import data_copying, laplacian_pyramid, mmd2_unbiased, near_duplicate_rate, prior_fit, sliced_wasserstein


@pytest.fixture(scope="module")
def faces() -> np.ndarray:
    return avatar_faces(192, seed=5, size=64, progress=False)


def test_laplacian_pyramid_levels_and_reconstruction(faces: np.ndarray) -> None:
    levels = laplacian_pyramid(faces[:4])
    assert [lvl.shape[1] for lvl in levels] == [64, 32, 16]
    assert np.abs(levels[0]).mean() < np.abs(levels[-1]).mean()  # the fine level holds only detail


def test_swd_separates_real_from_degraded(faces: np.ndarray) -> None:
    a, b = faces[:96], faces[96:]
    floor = sliced_wasserstein(a, b, per_image=32)
    blurred = (faces[96:].astype(np.float64).reshape(96, 32, 2, 32, 2, 3).mean(axis=(2, 4)).repeat(2, 1).repeat(2, 2)).astype(
        np.uint8
    )
    noise = np.random.default_rng(0).integers(0, 256, faces[96:].shape, dtype=np.uint8)
    assert len(floor.per_level) == 3
    assert floor.average < sliced_wasserstein(a, blurred, per_image=32).average
    assert sliced_wasserstein(a, blurred, per_image=32).average < sliced_wasserstein(a, noise, per_image=32).average
    assert sliced_wasserstein(a, b, per_image=32).average == floor.average  # seeded: repeatable
    with pytest.raises(ValueError, match="equal size"):
        sliced_wasserstein(a, b[:10])


def test_mmd_and_prior_fit() -> None:
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((300, 8)), rng.standard_normal((300, 8))
    assert abs(mmd2_unbiased(x, y, 2.0)) < 0.01
    assert mmd2_unbiased(x, y + 1.0, 2.0) > 0.05
    good = prior_fit(rng.standard_normal((400, 8)), permutations=50)
    bad = prior_fit(rng.standard_normal((400, 8)) * 0.5 + 0.5, permutations=50)
    assert good.p_value > 0.05 and bad.p_value < 0.05
    assert good.ks_max < bad.ks_max


def test_data_copying_flags_a_model_that_copies(faces: np.ndarray) -> None:
    train, held_out = faces[:128], faces[128:160]
    copies = np.clip(train[:32].astype(int) + 1, 0, 255).astype(np.uint8)
    assert data_copying(copies, train, held_out).z < -3
    assert abs(data_copying(faces[160:192], train, held_out).z) < 3


def test_near_duplicate_rate(faces: np.ndarray) -> None:
    assert near_duplicate_rate(np.concatenate([faces[:10], faces[:10]]), 0.01) == 1.0
    assert near_duplicate_rate(faces[:50], 0.01) == 0.0
