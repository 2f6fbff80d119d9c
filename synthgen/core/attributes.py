"""The attribute space of a conditional model, and the deterministic draw of attribute values.

A conditional decoder takes, beside z, the one-hot codes of its attributes (``AttributeSpace.one_hot``:
the attributes in manifest order, each a block of ``len(values)`` columns). The space comes from the
package's manifest (``attributes``): the names and values, which attributes are identity attributes, and
each value's share of the training labels (``marginals``).

An attribute a request does not name is drawn from its training marginal, as a pure function of
(seed, index), like the latent (``draw``); the draws of different attributes are independent. The
counter hash is the latents' own (``synthgen.core.latents.uniforms``) under a stream key of its own, so
adding attributes to a model never changes its latents.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, overload

import numpy as np

from synthgen.core.latents import MAX_SEED, Seeds, _splitmix64, check_seeds, uniforms

# Stream keys: the attribute draws of images, of identities, and the quota shuffles are independent streams.
ATTRIBUTE_STREAM = 0xA77B_1B07_E5A1_0001
IDENTITY_STREAM = 0x1DE4_7117_0C0D_E002
QUOTA_STREAM = 0x9007_A5A5_F00D_0003


@overload
def stream_seed(seed: int, stream: int, salt: int = 0) -> int: ...
@overload
def stream_seed(seed: np.ndarray, stream: int, salt: int = 0) -> np.ndarray: ...
def stream_seed(seed: Seeds, stream: int, salt: int = 0) -> Seeds:
    """A seed for one stream of draws of ``seed`` (and of one attribute, ``salt``), in [0, MAX_SEED]; of each
    seed of an array of them, elementwise."""
    check_seeds(seed)
    mixed = _splitmix64(np.asarray(seed, dtype=np.uint64) ^ np.uint64(stream ^ (salt * 0x9E37_79B9))) & np.uint64(MAX_SEED)
    return mixed.astype(np.int64) if isinstance(seed, np.ndarray) else int(mixed)


@dataclass(frozen=True)
class AttributeSpace:
    """Names, values, identity attributes and training marginals of a conditional model's attributes."""

    values: Mapping[str, tuple[str, ...]]  # in the decoder's order
    identity: tuple[str, ...] = ()
    marginals: Mapping[str, tuple[float, ...]] | None = None  # None: uniform

    def __post_init__(self) -> None:
        for name, vals in self.values.items():
            if not vals:
                raise ValueError(f"attribute {name!r} has no values")
            if len(set(vals)) != len(vals):
                raise ValueError(f"attribute {name!r} lists a value twice")
        unknown = [n for n in self.identity if n not in self.values]
        if unknown:
            raise ValueError(f"identity attributes {unknown} are not attributes of the model")
        for name, shares in (self.marginals or {}).items():
            if name not in self.values or len(shares) != len(self.values[name]):
                raise ValueError(f"marginals of {name!r} do not match its values")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.values)

    @property
    def dim(self) -> int:
        """Columns of the one-hot code the decoder takes."""
        return sum(len(v) for v in self.values.values())

    def __bool__(self) -> bool:
        return bool(self.values)

    def offsets(self) -> dict[str, int]:
        out, start = {}, 0
        for name, vals in self.values.items():
            out[name] = start
            start += len(vals)
        return out

    def index_of(self, name: str, value: str) -> int:
        return self.values[name].index(value)

    def marginal(self, name: str) -> np.ndarray:
        count = len(self.values[name])
        shares = (self.marginals or {}).get(name)
        p = np.full(count, 1.0 / count) if shares is None else np.asarray(shares, dtype=np.float64)
        out: np.ndarray = p / p.sum()
        return out

    def one_hot(self, codes: np.ndarray) -> np.ndarray:
        """Value indices [B, len(names)] -> the decoder's float32 condition [B, dim]."""
        codes = np.asarray(codes, dtype=np.int64).reshape(-1, len(self.values))
        out = np.zeros((codes.shape[0], self.dim), dtype=np.float32)
        for column, start in enumerate(self.offsets().values()):
            out[np.arange(codes.shape[0]), start + codes[:, column]] = 1.0
        return out

    def codes_of(self, condition: np.ndarray) -> np.ndarray:
        """The inverse of ``one_hot``: the decoder's condition [B, dim] -> value indices [B, len(names)].

        Each attribute's value is the largest column of its block, so a blend of two codes (an interpolation)
        reads as its dominant value.
        """
        condition = np.asarray(condition).reshape(-1, self.dim)
        out = np.empty((condition.shape[0], len(self.values)), dtype=np.int64)
        for column, (name, start) in enumerate(self.offsets().items()):
            out[:, column] = np.argmax(condition[:, start : start + len(self.values[name])], axis=1)
        return out

    def draw(
        self, seed: Seeds, indices: np.ndarray, names: Sequence[str] | None = None, stream: int = ATTRIBUTE_STREAM
    ) -> np.ndarray:
        """Value indices [len(indices), len(names)] drawn from the training marginals, from (seed, index) alone."""
        names = self.names if names is None else tuple(names)
        u = uniforms(stream_seed(seed, stream), np.asarray(indices), len(self.values))
        out = np.empty((u.shape[0], len(names)), dtype=np.int64)
        cdfs, positions = self._cdfs, self._positions
        for column, name in enumerate(names):
            cdf = cdfs[name]
            position = positions[name]  # a fixed column of the hash per attribute, whatever is drawn
            out[:, column] = np.minimum(np.searchsorted(cdf, u[:, position], side="right"), len(cdf) - 1)
        return out

    @cached_property
    def _cdfs(self) -> dict[str, np.ndarray]:
        """Each attribute's marginal CDF, which every draw searches."""
        return {name: np.cumsum(self.marginal(name)) for name in self.values}

    @cached_property
    def _positions(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.values)}

    def labels(self, codes: np.ndarray) -> list[dict[str, str]]:
        """Value indices [B, len(names)] -> one {name: value} per row."""
        return [{n: self.values[n][int(c)] for n, c in zip(self.names, row, strict=True)} for row in np.asarray(codes)]

    def same_values(self, other: AttributeSpace) -> bool:
        """The same attributes with the same values, both in the same order (the one-hot layout of a decoder's or a
        classifier's columns); identity attributes and marginals may differ."""
        return [(n, tuple(v)) for n, v in self.values.items()] == [(n, tuple(v)) for n, v in other.values.items()]

    def to_manifest(self) -> dict[str, Any]:
        return {
            # JSON objects have no order (manifests are written with sorted keys): "order" keeps the decoder's
            "order": list(self.names),
            "values": {n: list(v) for n, v in self.values.items()},
            "identity": list(self.identity),
            "marginals": {n: [round(float(s), 6) for s in self.marginal(n)] for n in self.values},
        }

    @classmethod
    def from_manifest(cls, entry: Mapping[str, Any] | None) -> AttributeSpace:
        """The space of a manifest's ``attributes`` entry; empty (unconditional) when there is none."""
        if not entry:
            return cls({})
        order = entry.get("order") or list(entry["values"])
        if sorted(order) != sorted(entry["values"]):
            raise ValueError(f"attributes: order {list(order)} does not name the attributes {sorted(entry['values'])}")
        values = {str(n): tuple(str(v) for v in entry["values"][n]) for n in order}
        marginals = {str(n): tuple(float(s) for s in shares) for n, shares in (entry.get("marginals") or {}).items()}
        return cls(values, tuple(entry.get("identity", ())), marginals or None)


def label_marginals(values: Mapping[str, Sequence[str]], codes: np.ndarray) -> dict[str, tuple[float, ...]]:
    """Each value's share of a label table [N, len(values)] (value indices)."""
    codes = np.asarray(codes, dtype=np.int64)
    out = {}
    for column, (name, vals) in enumerate(values.items()):
        counts = np.bincount(codes[:, column], minlength=len(vals)).astype(np.float64)
        out[name] = tuple(float(c) for c in counts / max(counts.sum(), 1.0))
    return out
