"""The sample-quality metrics on data whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("scipy")
pytest.importorskip("python_avatars")

from aae.data import avatar_faces
from aae.metrics import (
    data_copying,
    gaussian_prior_fit,
    interpolation_swd,
    laplacian_pyramid,
    midpoints,
    mmd2_permutation_test,
    mmd2_unbiased,
    near_duplicate_rate,
    prior_fit,
    prior_marginals,
    sliced_wasserstein,
)
from aae.priors import complete_spec
from synthgen.core.latents import prior_latents, slerp


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
    good = gaussian_prior_fit(rng.standard_normal((400, 8)), permutations=50)
    bad = gaussian_prior_fit(rng.standard_normal((400, 8)) * 0.5 + 0.5, permutations=50)
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


def test_swd_of_a_set_with_itself_is_far_below_the_real_vs_real_floor(faces: np.ndarray) -> None:
    a, b = faces[:96], faces[96:]
    floor = sliced_wasserstein(a, b, per_image=32)
    assert sliced_wasserstein(a, a, per_image=32).average == 0.0  # both sides take the same patches
    nudged = np.clip(a.astype(int) + np.random.default_rng(0).integers(-1, 2, a.shape), 0, 255).astype(np.uint8)
    assert sliced_wasserstein(a, nudged, per_image=32).average < 0.1 * floor.average


def test_swd_grows_monotonically_with_added_noise(faces: np.ndarray) -> None:
    a, b = faces[:96], faces[96:]
    rng = np.random.default_rng(3)
    scores = []
    for sigma in (0, 8, 16, 32, 64):
        noisy = np.clip(b + rng.normal(0, sigma, b.shape), 0, 255).astype(np.uint8)
        scores.append(sliced_wasserstein(a, noisy, per_image=32).average)
    assert scores == sorted(scores) and scores[-1] > 3 * scores[0], scores


def test_mmd_permutation_test_detects_a_shifted_gaussian_and_not_an_identical_one() -> None:
    rng = np.random.default_rng(7)
    x, same, shifted = (rng.standard_normal((300, 8)) for _ in range(3))
    shifted[:, 0] += 0.5  # half a standard deviation, in one of eight dimensions
    mmd_same, p_same = mmd2_permutation_test(x, same, bandwidth=2.0, permutations=200)
    mmd_shift, p_shift = mmd2_permutation_test(x, shifted, bandwidth=2.0, permutations=200)
    assert p_same > 0.05 and p_shift < 0.01
    assert mmd_shift > 5 * abs(mmd_same)
    assert mmd_same == pytest.approx(mmd2_unbiased(x, same, 2.0))  # the kernel-matrix form is the same estimator
    assert mmd_shift == pytest.approx(mmd2_unbiased(x, shifted, 2.0))
    assert mmd2_permutation_test(x, shifted, 2.0, 50, seed=1) == mmd2_permutation_test(x, shifted, 2.0, 50, seed=1)


def test_prior_fit_for_a_mixture_prior() -> None:
    spec = complete_spec({"kind": "mixture", "components": 4, "radius": 3.0, "std": 0.5}, 4)
    prior = prior_latents(spec, 100, np.arange(400), 4).astype(np.float64)
    matching = prior_latents(spec, 101, np.arange(400), 4).astype(np.float64)
    gaussian = np.random.default_rng(0).standard_normal((400, 4)) * 2.0  # same scale, no clusters
    marginals = prior_marginals(spec, 4)
    good = prior_fit(matching, prior, permutations=100, marginals=marginals)
    bad = prior_fit(gaussian, prior, permutations=100, marginals=marginals)
    assert good.p_value > 0.05 and bad.p_value < 0.02
    assert good.ks_max < good.ks_critical * 1.5 < bad.ks_max
    two_sample = prior_fit(matching, prior, permutations=100)  # no exact marginals: two-sample KS
    assert two_sample.ks_critical > good.ks_critical and two_sample.ks_max < two_sample.ks_critical * 1.5
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        prior_fit(matching, prior[:, :3])


def test_slerp_midpoints_match_the_service_strips() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((5, 6)).astype(np.float32), rng.standard_normal((5, 6)).astype(np.float32)
    expected = np.stack([slerp(a[i], b[i], np.array([0.5]))[0] for i in range(5)])
    np.testing.assert_allclose(midpoints(a, b, "slerp"), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(midpoints(a, b, "lerp"), (a + b) / 2, rtol=1e-6)


def test_interpolation_swd_flags_off_manifold_midpoints(faces: np.ndarray) -> None:
    # latent i is the one-hot code of face i. Decoding linearly, the midpoint of two codes is a double
    # exposure of two faces (a Pegasus): not a face. Snapping to the nearest code keeps midpoints on faces.
    table = faces[:96].reshape(96, -1).astype(np.float64)
    rng = np.random.default_rng(0)
    a, b = np.eye(96)[rng.permutation(96)], np.eye(96)[rng.permutation(96)]

    def linear(z: np.ndarray) -> np.ndarray:
        return np.clip(z @ table, 0, 255).round().astype(np.uint8).reshape(len(z), *faces.shape[1:])

    def snapped(z: np.ndarray) -> np.ndarray:
        return faces[np.argmax(z + 1e-3 * np.arange(96), axis=1)]  # ties go to the higher index

    blended = interpolation_swd(linear, a, b, faces[96:], method="lerp", per_image=32)
    on_manifold = interpolation_swd(snapped, a, b, faces[96:], method="lerp", per_image=32)
    assert blended.endpoints.average == pytest.approx(on_manifold.endpoints.average)  # the same endpoint images
    assert blended.ratio > 2 and on_manifold.ratio < 1.2, (blended.ratio, on_manifold.ratio)
    assert blended.to_dict()["pairs"] == 96
    with pytest.raises(ValueError, match="as many pairs"):
        interpolation_swd(linear, a, b, faces[:10])


def test_near_duplicate_rate_counts_known_duplicates(faces: np.ndarray) -> None:
    distinct = faces[:40]
    copies = np.clip(faces[:10].astype(int) + 2, 0, 255).astype(np.uint8)  # 10 faces, each shifted by 2 grey levels
    images = np.concatenate([distinct, copies])
    # every copy and its original have a neighbour at RMS 2/255 < 0.01, and no other face is that close
    assert near_duplicate_rate(images, 0.01) == pytest.approx(20 / 50)
    assert near_duplicate_rate(images, 0.005) == 0.0
