"""The crowd plan: exact quotas, identities, fixed attributes, and request validation (synthgen/core/crowd.py)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from synthgen.core.attributes import AttributeSpace
from synthgen.core.crowd import Crowd, permute, quota_counts
from synthgen.core.errors import InvalidRequest

SPACE = AttributeSpace(
    {"skin": ("pale", "brown", "dark"), "hair": ("red", "black"), "mouth": ("smile", "sad", "default")},
    identity=("skin", "hair"),
    marginals={"skin": (0.5, 0.3, 0.2), "hair": (0.9, 0.1), "mouth": (0.2, 0.2, 0.6)},
)


@pytest.mark.parametrize("n", [1, 2, 3, 7, 64, 1000, 4097])
def test_permutation_is_a_bijection(n: int) -> None:
    out = permute(np.arange(n), n, key=99)
    assert sorted(out.tolist()) == list(range(n))


def test_quota_counts_sum_to_n_by_largest_remainder() -> None:
    assert quota_counts({"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}, 10) == {"a": 4, "b": 3, "c": 3}
    assert quota_counts({"a": 0.25, "b": 0.75}, 3) == {"a": 1, "b": 2}
    for n in range(0, 50):
        assert sum(quota_counts({"a": 0.1, "b": 0.2, "c": 0.7}, n).values()) == n


@pytest.mark.parametrize("count", [1, 5, 99, 1000, 1234])
def test_distribution_counts_are_exact_for_any_count(count: int) -> None:
    shares = {"smile": 0.5, "sad": 0.3, "default": 0.2}
    crowd = Crowd(distribution={"mouth": shares})
    rows = SPACE.labels(crowd.codes(SPACE, 3, count, np.arange(count)))
    assert Counter(r["mouth"] for r in rows) == {k: v for k, v in quota_counts(shares, count).items() if v}


def test_codes_of_a_chunk_equal_those_of_the_whole_job() -> None:
    crowd = Crowd(attributes={"skin": "dark"}, distribution={"mouth": {"smile": 0.4, "sad": 0.6}}, identities=9, per_identity=5)
    whole = crowd.codes(SPACE, 11, 45, np.arange(45))
    assert np.array_equal(crowd.codes(SPACE, 11, 45, np.arange(17, 30)), whole[17:30])
    assert np.array_equal(
        crowd.latents({"kind": "gaussian"}, 11, np.arange(17, 30), 4, None),
        crowd.latents({"kind": "gaussian"}, 11, np.arange(45), 4, None)[17:30],
    )


def test_identities_share_identity_attributes_and_code() -> None:
    crowd = Crowd(identities=20, per_identity=4, variation=0.3)
    codes = crowd.codes(SPACE, 5, 80, np.arange(80)).reshape(20, 4, 3)
    assert (codes[:, :, :2] == codes[:, :1, :2]).all()  # skin and hair fixed within an identity
    assert len({tuple(r) for r in codes[:, :, :2].reshape(-1, 2)}) > 1  # and differ between identities
    assert (codes[:, :, 2] != codes[:, :1, 2]).any()  # the mouth varies
    z = crowd.latents({"kind": "gaussian"}, 5, np.arange(80), 16, None).reshape(20, 4, 16)
    within = np.linalg.norm(z - z.mean(1, keepdims=True), axis=2).mean()
    between = np.linalg.norm(z.mean(1) - z.mean(1).mean(0), axis=1).mean()
    assert within < between


def test_an_identity_attribute_quota_counts_identities() -> None:
    crowd = Crowd(distribution={"hair": {"red": 0.5, "black": 0.5}}, identities=6, per_identity=3)
    rows = SPACE.labels(crowd.codes(SPACE, 1, 18, np.arange(18)))
    assert Counter(r["hair"] for r in rows) == {"red": 9, "black": 9}


def test_unnamed_attributes_follow_the_training_marginals() -> None:
    codes = Crowd().codes(SPACE, 0, 20000, np.arange(20000))
    assert abs((codes[:, 1] == 0).mean() - 0.9) < 0.02


@pytest.mark.parametrize(
    ("crowd", "count", "field"),
    [
        (Crowd(attributes={"nose": "big"}), 4, "attributes.nose"),
        (Crowd(attributes={"skin": "green"}), 4, "attributes.skin"),
        (Crowd(distribution={"hair": {"red": 0.5, "black": 0.4}}), 4, "distribution.hair"),
        (Crowd(distribution={"hair": {"blue": 1.0}}), 4, "distribution.hair.blue"),
        (Crowd(attributes={"hair": "red"}, distribution={"hair": {"red": 1.0}}), 4, "distribution.hair"),
        (Crowd(identities=3, per_identity=2), 5, "count"),
        (Crowd(identities=3), 6, "per_identity"),
        (Crowd(), None, "count"),
    ],
)
def test_bad_requests_name_the_field(crowd: Crowd, count: int | None, field: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        crowd.validated(SPACE, count)
    assert caught.value.details["field"] == field
    assert caught.value.code == "invalid_request"


def test_allowed_values_are_listed() -> None:
    with pytest.raises(InvalidRequest) as caught:
        Crowd(attributes={"skin": "green"}).validated(SPACE, 1)
    assert caught.value.details["allowed"] == ["pale", "brown", "dark"]


def test_an_unconditional_model_takes_no_attributes() -> None:
    with pytest.raises(InvalidRequest, match="unconditional"):
        Crowd(attributes={"skin": "pale"}).validated(AttributeSpace({}), 1)


def test_count_may_be_omitted_with_identities() -> None:
    assert Crowd(identities=3, per_identity=2).validated(SPACE, None) == 6
    assert Crowd(identities=3, per_identity=2).validated(SPACE, 6) == 6
