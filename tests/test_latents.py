from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from service.engine.registry import ModelRegistry
from service.engine.rendering import RenderSpec, render
from synthgen.core.latents import MAX_SEED, inverse_normal_cdf, latents, prior_latents, slerp


def test_latents_do_not_depend_on_batching() -> None:
    whole = latents(11, np.arange(200), 16)
    for batch in (1, 7, 64):
        parts = np.concatenate([latents(11, np.arange(s, min(200, s + batch)), 16) for s in range(0, 200, batch)])
        assert np.array_equal(parts, whole)
    shuffled = np.random.default_rng(0).permutation(200)
    assert np.array_equal(latents(11, shuffled, 16), whole[shuffled])


def test_latents_are_standard_normal_and_seed_dependent() -> None:
    z = latents(1, np.arange(20000), 32)
    assert abs(float(z.mean())) < 0.01 and abs(float(z.std()) - 1) < 0.01
    assert abs(float((np.abs(z) < 1).mean()) - 0.6827) < 0.005
    assert not np.array_equal(latents(2, np.arange(5), 32), z[:5])
    assert latents(MAX_SEED, np.arange(2), 4).shape == (2, 4)


@pytest.mark.parametrize("truncation", [0.05, 0.5, 1.0, 2.0])
def test_truncation_bounds_every_coordinate(truncation: float) -> None:
    z = latents(3, np.arange(4000), 16, truncation=truncation)
    assert np.abs(z).max() <= truncation
    # a truncated normal fills its band, it is not clipped: little mass sits on the bound itself
    assert float((np.abs(z) >= truncation * 0.999).mean()) < 0.01
    assert np.abs(z).max() > truncation * 0.95


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_truncation_and_seed_are_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="truncation must be a finite number > 0"):
        latents(0, np.arange(2), 4, truncation=bad)
    with pytest.raises(ValueError, match="seed must be in"):
        latents(-1, np.arange(2), 4)


def test_inverse_normal_cdf_is_accurate() -> None:
    from statistics import NormalDist

    p = np.array([1e-12, 1e-6, 0.01, 0.02425, 0.2, 0.5, 0.8, 0.99, 1 - 1e-9])
    want = np.array([NormalDist().inv_cdf(float(v)) for v in p])
    assert np.allclose(inverse_normal_cdf(p), want, atol=1e-7)


def test_slerp_keeps_endpoints_and_norm() -> None:
    a, b = latents(0, np.array([0, 1]), 32)
    path = slerp(a, b, np.linspace(0, 1, 5))
    assert np.allclose(path[0], a, atol=1e-6) and np.allclose(path[-1], b, atol=1e-6)
    norms = np.linalg.norm(path, axis=1)
    assert norms.min() > 0.8 * min(np.linalg.norm(a), np.linalg.norm(b))


def test_image_bytes_identical_at_batch_sizes_1_7_64(tiny_models_dir: Path) -> None:
    model = ModelRegistry.from_directory(tiny_models_dir, "tiny").default
    spec = RenderSpec(seed=9, truncation=1.5)
    whole = [s.data for s in render(model, spec, np.arange(64))]
    for batch in (1, 7, 64):
        parts = [s.data for start in range(0, 64, batch) for s in render(model, spec, np.arange(start, min(64, start + batch)))]
        assert parts == whole
    assert len(set(whole)) == 64


def test_mixture_latents_are_deterministic_and_cluster_on_the_means() -> None:
    means = np.array([[3.0, 0.0, 0.0], [0.0, -3.0, 0.0], [0.0, 0.0, 3.0]])
    prior = {"kind": "mixture", "std": 0.2, "means": means.tolist()}
    z = prior_latents(prior, 5, np.arange(3000), 3)
    again = np.concatenate([prior_latents(prior, 5, np.arange(i, i + 7), 3) for i in range(0, 3000, 7)])[:3000]
    assert np.array_equal(z, again)  # any batching gives the same latents
    distance = np.linalg.norm(z[:, None, :] - means[None], axis=2)
    assert distance.min(axis=1).max() < 0.2 * 6
    counts = np.bincount(distance.argmin(axis=1), minlength=3)
    assert counts.min() > 900  # equal weights
    truncated = prior_latents(prior, 5, np.arange(3000), 3, truncation=1.0)
    assert np.abs(truncated - means[distance.argmin(axis=1)]).max() <= 0.2 + 1e-6  # within +-1 sigma of its mean
    gaussian = prior_latents({"kind": "gaussian", "std": 1.0}, 5, np.arange(10), 3)
    assert np.array_equal(gaussian, latents(5, np.arange(10), 3))  # the Gaussian contract is unchanged
