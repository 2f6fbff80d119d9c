"""Who is in the crowd: the attribute values and latents of every image of a controlled job.

A ``Crowd`` is the part of a job request that says who is in it, checked against a model's
``AttributeSpace`` (``Crowd.validated``):

- ``attributes`` ``{name: value}``: every image has it;
- ``distribution`` ``{name: {value: share}}``, shares summing to 1: each value gets exactly its share of
  the images (of the identities, for an identity attribute of an identity job), rounded by largest
  remainder, and the values are spread over the indices by a keyed permutation of [0, n) (``quota_values``),
  so the same request gives the same images and any chunk is computed alone;
- ``identities`` and ``per_identity``: image i belongs to identity i // per_identity. Its identity
  attributes and its identity code are drawn from (seed, identity); its other attributes from (seed, i).
  The latent is ``sqrt(1 - v^2) * z_identity + v * z_image`` with ``v = variation``: still a sample of the
  standard normal prior, near the identity's code.

Everything is a pure function of (request, seed, index), like the latents themselves.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from synthgen.core.attributes import ATTRIBUTE_STREAM, IDENTITY_STREAM, QUOTA_STREAM, AttributeSpace, stream_seed
from synthgen.core.errors import InvalidCrowd
from synthgen.core.latents import Seeds, _splitmix64, prior_latents

DEFAULT_VARIATION = 0.35
SHARE_TOLERANCE = 1e-6


def _invalid(field_name: str, message: str, allowed: Any = None) -> InvalidCrowd:
    details: dict[str, Any] = {"field": field_name}
    if allowed is not None:
        details["allowed"] = allowed
    return InvalidCrowd(f"{field_name}: {message}", details)


@dataclass(frozen=True)
class Crowd:
    attributes: Mapping[str, str] = field(default_factory=dict)
    distribution: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    identities: int | None = None
    per_identity: int | None = None
    variation: float = DEFAULT_VARIATION

    @property
    def controlled(self) -> bool:
        return bool(self.attributes or self.distribution or self.identities)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.attributes:
            out["attributes"] = dict(self.attributes)
        if self.distribution:
            out["distribution"] = {n: dict(s) for n, s in self.distribution.items()}
        if self.identities:
            out.update(identities=self.identities, per_identity=self.per_identity, variation=self.variation)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Crowd:
        data = data or {}
        return cls(
            attributes=dict(data.get("attributes") or {}),
            distribution={n: dict(s) for n, s in (data.get("distribution") or {}).items()},
            identities=data.get("identities"),
            per_identity=data.get("per_identity"),
            variation=float(data.get("variation", DEFAULT_VARIATION)),
        )

    def validated(self, space: AttributeSpace, count: int | None) -> int:
        """Check the request against the model's attributes; return the job's image count.

        Raises InvalidCrowd (an InvalidRequest, code ``invalid_request``) naming the field and listing what is allowed.
        """
        if (self.attributes or self.distribution) and not space:
            raise _invalid("attributes" if self.attributes else "distribution", "this model is unconditional", {})
        self._check_attributes(space)
        for name, shares in self.distribution.items():
            self._check_distribution(space, name, shares)
        return self._image_count(count)

    def _check_attributes(self, space: AttributeSpace) -> None:
        for name, value in self.attributes.items():
            if name not in space.values:
                raise _invalid(f"attributes.{name}", "unknown attribute", sorted(space.values))
            if value not in space.values[name]:
                raise _invalid(f"attributes.{name}", f"unknown value {value!r}", list(space.values[name]))

    def _check_distribution(self, space: AttributeSpace, name: str, shares: Mapping[str, float]) -> None:
        if name not in space.values:
            raise _invalid(f"distribution.{name}", "unknown attribute", sorted(space.values))
        allowed = list(space.values[name])
        if name in self.attributes:
            raise _invalid(f"distribution.{name}", "is also in attributes; name an attribute in one of the two")
        if not shares:
            raise _invalid(f"distribution.{name}", "needs at least one value", allowed)
        for value, share in shares.items():
            if value not in space.values[name]:
                raise _invalid(f"distribution.{name}.{value}", f"unknown value {value!r}", allowed)
            if isinstance(share, bool) or not (isinstance(share, int | float) and math.isfinite(share) and 0 <= share <= 1):
                raise _invalid(f"distribution.{name}.{value}", f"a share is a number in [0, 1], got {share!r}")
        total = sum(float(s) for s in shares.values())
        if abs(total - 1.0) > SHARE_TOLERANCE:
            raise _invalid(f"distribution.{name}", f"shares must sum to 1, they sum to {total:.6g}")

    def _image_count(self, count: int | None) -> int:
        if (self.identities is None) != (self.per_identity is None):
            raise _invalid("identities" if self.identities is None else "per_identity", "identities and per_identity go together")
        if not 0 <= self.variation <= 1:
            raise _invalid("variation", f"a number in [0, 1], got {self.variation}")
        if self.identities is None or self.per_identity is None:
            if count is None:
                raise _invalid("count", "required (it may be omitted only with identities and per_identity)")
            return count
        if self.identities < 1 or self.per_identity < 1:
            raise _invalid("identities", "identities and per_identity must be >= 1")
        total_images = self.identities * self.per_identity
        if count is not None and count != total_images:
            raise _invalid(
                "count", f"{count} disagrees with identities x per_identity = {total_images}; omit count or make them agree"
            )
        return total_images

    def identity_of(self, indices: np.ndarray) -> np.ndarray | None:
        if not self.per_identity:
            return None
        return np.asarray(indices, dtype=np.int64) // self.per_identity

    def _check_seeds(self, seed: Seeds) -> None:
        if isinstance(seed, np.ndarray) and (self.per_identity or self.distribution):
            raise ValueError("one seed per index is for crowds without identities or quotas: those draw from one job's seed")

    def codes(self, space: AttributeSpace, seed: Seeds, count: int, indices: np.ndarray) -> np.ndarray:
        """Value indices [len(indices), len(space.names)] of images ``indices`` of a job of ``count`` images (``seed``:
        the job's, or one per index for a crowd without identities or quotas)."""
        self._check_seeds(seed)
        indices = np.asarray(indices, dtype=np.int64)
        identity = self.identity_of(indices)
        out = space.draw(seed, indices, stream=ATTRIBUTE_STREAM)
        if identity is not None and space.identity:
            per_identity = space.draw(seed, identity, stream=IDENTITY_STREAM)
            for column, name in enumerate(space.names):
                if name in space.identity:
                    out[:, column] = per_identity[:, column]
        for column, name in enumerate(space.names):
            if name in self.attributes:
                out[:, column] = space.index_of(name, self.attributes[name])
            elif name in self.distribution:
                by_identity = identity is not None and name in space.identity and self.identities
                units, n = (identity, int(self.identities or 0)) if by_identity else (indices, count)
                assert units is not None and isinstance(seed, int)  # _check_seeds: a job's one seed
                values = quota_values(self.distribution[name], n, units, stream_seed(seed, QUOTA_STREAM, salt=column + 1))
                out[:, column] = [space.index_of(name, v) for v in values]
        return out

    def latents(
        self,
        prior: dict[str, Any],
        seed: Seeds,
        indices: np.ndarray,
        dim: int,
        truncation: float | None,
        sources: np.ndarray | None = None,
    ) -> np.ndarray:
        """float32 latents [len(indices), dim]: the plain prior draw, or identity code plus variation.

        ``sources``: the index whose own draw each image takes (default: its own index). A unique job that
        replaces image i's candidate keeps i's attributes and identity and draws the latent again from another
        source.
        """
        self._check_seeds(seed)
        indices = np.asarray(indices, dtype=np.int64)
        own = prior_latents(prior, seed, indices if sources is None else np.asarray(sources, dtype=np.int64), dim, truncation)
        identity = self.identity_of(indices)
        if identity is None:
            return own
        shared = prior_latents(prior, stream_seed(seed, IDENTITY_STREAM), identity, dim, truncation)
        v = float(self.variation)
        return (math.sqrt(1 - v * v) * shared.astype(np.float64) + v * own.astype(np.float64)).astype(np.float32)


def quota_counts(shares: Mapping[str, float], n: int) -> dict[str, int]:
    """Exact counts per value for n units: floor of each share, then the largest remainders (ties: listed order)."""
    raw = {v: float(s) * n for v, s in shares.items()}
    counts = {v: math.floor(x) for v, x in raw.items()}
    left = n - sum(counts.values())
    by_remainder = sorted(raw, key=lambda v: (-(raw[v] - counts[v]), list(shares).index(v)))
    for value in by_remainder[:left]:
        counts[value] += 1
    return counts


def permute(positions: np.ndarray, n: int, key: int) -> np.ndarray:
    """A keyed bijection of [0, n) (a 4-round Feistel network on the next power of 4, cycle-walked into range)."""
    positions = np.asarray(positions, dtype=np.uint64)
    half_bits = max(1, math.ceil(max(n - 1, 1).bit_length() / 2))
    mask = np.uint64((1 << half_bits) - 1)
    keys = _splitmix64(np.arange(1, 5, dtype=np.uint64) ^ np.uint64(key))

    def rounds(x: np.ndarray) -> np.ndarray:
        left, right = x >> np.uint64(half_bits), x & mask
        for k in keys:
            with np.errstate(over="ignore"):
                left, right = right, left ^ (_splitmix64(right ^ k) & mask)
        out: np.ndarray = (left << np.uint64(half_bits)) | right
        return out

    out = rounds(positions)
    outside = out >= np.uint64(n)
    while outside.any():  # cycle walking: each value re-enters [0, n) after a few rounds, and stays a bijection
        out[outside] = rounds(out[outside])
        outside = out >= np.uint64(n)
    return out.astype(np.int64)


def quota_values(shares: Mapping[str, float], n: int, units: np.ndarray, key: int) -> list[str]:
    """The value of each unit (image or identity) in [0, n) under exact quotas, spread by a keyed permutation."""
    counts = quota_counts(shares, n)
    values = list(counts)
    bounds = np.cumsum([counts[v] for v in values])
    slots = permute(np.asarray(units), n, key)
    return [values[int(i)] for i in np.searchsorted(bounds, slots, side="right")]
