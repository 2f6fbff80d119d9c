"""What the API returns, as typed dataclasses."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from synthgen.client.constants import TERMINAL_STATUSES

log = logging.getLogger(__name__)


def _known_fields(cls: type[Any], data: Mapping[str, Any]) -> dict[str, Any]:
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in data.items() if k in names}


@dataclass(frozen=True)
class Job:
    """A job as ``POST /v1/jobs`` or ``GET /v1/jobs/{id}`` describes it (fields the answer lacks stay None)."""

    id: str
    status: str
    model: str
    count: int
    seed: int
    done: int = 0
    truncation: float | None = None
    format: str | None = None
    priority: str | None = None
    created_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    expires_at: float | None = None
    error: str | None = None
    links: dict[str, str] = field(default_factory=dict)
    # who is in the crowd, as the request said (absent from plain jobs)
    attributes: dict[str, str] = field(default_factory=dict)
    distribution: dict[str, dict[str, float]] = field(default_factory=dict)
    identities: int | None = None
    per_identity: int | None = None
    variation: float | None = None

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Job:
        return cls(**_known_fields(cls, data))


@dataclass(frozen=True)
class ModelInfo:
    name: str
    version: str
    sha256: str
    latent_dim: int
    image_shape: tuple[int, int, int]  # height, width, channels
    default: bool = False
    prior: dict[str, Any] = field(default_factory=dict)
    attributes: dict[str, list[str]] = field(default_factory=dict)  # {name: [values]}; {} when unconditional
    identity_attributes: list[str] = field(default_factory=list)  # fixed within an identity of an identity job
    classifier: dict[str, Any] | None = None  # {"accuracy": {name: fraction}}: None when images are not labelled

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def conditional(self) -> bool:
        """Whether jobs of this model take ``attributes`` and ``distribution``."""
        return bool(self.attributes)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ModelInfo:
        image = data["image"]
        shape = (int(image["height"]), int(image["width"]), int(image["channels"]))
        return cls(**_known_fields(cls, data), image_shape=shape)


@dataclass(frozen=True)
class Sample:
    """One sample of a result tar: its members (``{key}.{ext}`` and ``{key}.json``) and their raw tar blocks."""

    index: int
    raw: bytes
    members: dict[str, bytes]

    @property
    def key(self) -> str:
        return f"{self.index:08d}"

    @property
    def meta(self) -> dict[str, Any]:
        meta: dict[str, Any] = json.loads(self.members[f"{self.key}.json"])
        return meta

    @property
    def attributes(self) -> dict[str, str]:
        """The values the image was conditioned on ({} from an unconditional model)."""
        return dict(self.meta.get("attributes") or {})

    @property
    def identity(self) -> int | None:
        """The identity the image belongs to, in an identity job."""
        identity = self.meta.get("identity")
        return None if identity is None else int(identity)

    @property
    def files(self) -> dict[str, bytes]:
        """The members other than the metadata: the image."""
        return {name: data for name, data in self.members.items() if name != f"{self.key}.json"}
