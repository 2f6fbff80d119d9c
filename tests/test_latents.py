from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from service.engine.registry import ModelRegistry
from service.engine.rendering import RenderSpec, render
from synthgen.core.latents import MAX_SEED, inverse_normal_cdf, latents, prior_latents, slerp
from tests.support.conditional_model import ConditionalModel


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


def test_one_seed_per_index_gives_each_row_what_its_seed_gives_alone() -> None:
    """Single images of many requests are drawn in one call (``service/engine/single_images.py``): row i of a draw
    with seeds[i] is bit for bit the draw of (seeds[i], indices[i]) alone, for both priors and for truncation."""
    from synthgen.core.attributes import ATTRIBUTE_STREAM, AttributeSpace, stream_seed

    seeds = np.array([0, 7, 7, MAX_SEED, 2**40 + 3], dtype=np.int64)
    indices = np.array([0, 3, 4, 9, 2**33], dtype=np.int64)
    mixture = {"kind": "mixture", "std": 0.5, "means": np.eye(3, 8).tolist()}
    for prior in ({"kind": "gaussian", "std": 1.0}, mixture):
        for truncation in (None, 1.5):
            together = prior_latents(prior, seeds, indices, 8, truncation)
            alone = [prior_latents(prior, int(s), np.array([i]), 8, truncation)[0] for s, i in zip(seeds, indices, strict=True)]
            assert np.array_equal(together, np.stack(alone))
    assert [int(v) for v in stream_seed(seeds, ATTRIBUTE_STREAM, salt=2)] == [
        stream_seed(int(s), ATTRIBUTE_STREAM, 2) for s in seeds
    ]
    space = AttributeSpace({"a": ("x", "y", "z"), "b": ("p", "q")}, marginals={"a": (0.2, 0.3, 0.5), "b": (0.9, 0.1)})
    together = space.draw(seeds, indices)
    assert np.array_equal(
        together, np.concatenate([space.draw(int(s), np.array([i])) for s, i in zip(seeds, indices, strict=True)])
    )
    with pytest.raises(ValueError, match="one per index"):
        latents(seeds[:2], indices, 8)
    with pytest.raises(ValueError, match=r"2\*\*63-1"):
        latents(np.array([-1, 2], dtype=np.int64), indices[:2], 8)


def test_a_conditional_models_rows_of_many_seeds_match_each_alone_and_identity_crowds_refuse_them(
    tiny_conditional: ConditionalModel,
) -> None:
    from synthgen.core.crowd import Crowd

    model = ModelRegistry.from_directory(tiny_conditional.models_dir, tiny_conditional.name).default
    seeds, indices = np.array([3, 3, 11, 2**50], dtype=np.int64), np.array([0, 5, 1, 7], dtype=np.int64)
    together = model.inputs(seeds, indices, 2.0)
    alone = np.concatenate([model.inputs(int(s), np.array([i]), 2.0) for s, i in zip(seeds, indices, strict=True)])
    assert together.shape[1] > model.package.latent_dim and np.array_equal(together, alone)
    with pytest.raises(ValueError, match="without identities or quotas"):
        model.inputs(seeds, indices, None, Crowd(identities=2, per_identity=2))
