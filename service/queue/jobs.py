"""The queue's records as types: what a new job asks for (``JobSpec``), a stored job (``Job``), a work item.

A job hash read from Redis becomes a ``Job`` here, at the edge; the rest of the code asks the job
(``job.status_at(now)``, ``job.sequential``), never compares strings or reads raw fields.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from service.queue import keys as K
from service.settings import Settings, default
from synthgen.core.crowd import Crowd
from synthgen.core.images import DEFAULT_FORMAT, DEFAULT_QUALITY, ImageFormat
from synthgen.core.jobs import ANONYMOUS_TENANT, JobStatus, Priority

CLUSTER_SHARDS = 12  # the default on Redis Cluster: a few shards per master of a 3- to 6-master cluster


@dataclass(frozen=True)
class QueueConfig:
    chunk_size: int = default("chunk_size")  # images per work item
    result_ttl_s: int = default("result_ttl_s")  # how long a job's results are kept after it is created
    expired_retention_s: int = default("expired_retention_s")  # how long an expired job still answers "expired"
    shards: int = 1  # see service/queue/keys.py
    tagged: bool = False  # hash-tagged keys (Redis Cluster, or more than one shard)

    @classmethod
    def from_settings(cls, settings: Settings) -> QueueConfig:
        shards = settings.queue_shards or (CLUSTER_SHARDS if settings.redis_cluster else 1)
        tagged = settings.redis_cluster or shards > 1
        return cls(settings.chunk_size, settings.result_ttl_s, settings.expired_retention_s, shards, tagged)

    @property
    def keyspace(self) -> K.Keyspace:
        return K.Keyspace(self.shards, self.tagged)


@dataclass(frozen=True)
class JobSpec:
    """What a new job asks for, after validation and defaults (see ``service/queue/submit.py``)."""

    model: str  # name@version, resolved by the API
    sha256: str
    count: int
    seed: int
    truncation: float | None = None
    fmt: ImageFormat = DEFAULT_FORMAT
    quality: int = DEFAULT_QUALITY
    priority: Priority = Priority.BULK
    owner: str = ANONYMOUS_TENANT  # the API key's tenant id
    unique: bool = False  # no two images closer than the model's uniqueness threshold
    collection: str = ""  # keep uniqueness across the tenant's jobs of this collection (implies unique)
    novel: bool = False  # no image close to a training image
    crowd: Crowd = field(default_factory=Crowd)  # who is in the job: attributes, quotas, identities (validated)
    labels: bool = True  # the package's classifier labels every image (``predicted``, the card's histogram)

    def __post_init__(self) -> None:
        if self.collection:  # the one place where a collection implies unique
            object.__setattr__(self, "unique", True)
        object.__setattr__(self, "priority", Priority(self.priority))

    @property
    def sequential(self) -> bool:
        """Whether image i depends on the images before it (a replaced candidate shifts the rest)."""
        return self.unique or self.novel


def _opt_float(value: str | None) -> float | None:
    return float(value) if value else None


def _crowd_field(crowd: Crowd) -> str:
    """The job hash's ``crowd`` field: the crowd as JSON, or '' for an uncontrolled job (as jobs were before)."""
    # the listed order of a distribution's values is kept: it breaks ties of the largest remainder
    return json.dumps(crowd.to_dict(), separators=(",", ":")) if crowd.controlled else ""


def _crowd_of(value: str | None) -> Crowd:
    return Crowd.from_dict(json.loads(value)) if value else Crowd()


@dataclass(frozen=True)
class Job:
    """A job as stored in its Redis hash."""

    id: str
    status: JobStatus
    model: str
    sha256: str
    count: int
    done: int
    seed: int
    truncation: float | None
    fmt: ImageFormat
    quality: int
    priority: Priority
    owner: str
    unique: bool
    collection: str
    novel: bool
    chunk_size: int
    created_at: float
    expires_at: float
    started_at: float | None = None
    finished_at: float | None = None
    error: str | None = None
    crowd: Crowd = field(default_factory=Crowd)
    labels: bool = True

    @classmethod
    def from_fields(cls, fields: dict[str, str]) -> Job:
        """The job of a hash's decoded fields (what HGETALL returns)."""
        return cls(
            id=fields["id"],
            status=JobStatus(fields["status"]),
            model=fields["model"],
            sha256=fields["sha256"],
            count=int(fields["count"]),
            done=int(fields.get("done", 0)),
            seed=int(fields["seed"]),
            truncation=_opt_float(fields.get("truncation")),
            fmt=fields["format"],  # type: ignore[arg-type]  # written from a validated ImageFormat
            quality=int(fields["quality"]),
            priority=Priority(fields["priority"]),
            owner=fields.get("owner", ANONYMOUS_TENANT),
            unique=fields.get("unique") == "1",
            collection=fields.get("collection", ""),
            novel=fields.get("novel") == "1",
            chunk_size=int(fields["chunk_size"]),
            created_at=float(fields["created_at"]),
            expires_at=float(fields["expires_at"]),
            started_at=_opt_float(fields.get("started_at")),
            finished_at=_opt_float(fields.get("finished_at")),
            error=fields.get("error") or None,
            crowd=_crowd_of(fields.get("crowd")),
            labels=fields.get("labels") != "0",  # jobs from before the field were all labeled
        )

    @classmethod
    def new(cls, job_id: str, spec: JobSpec, chunk_size: int, now: float, expires_at: float) -> Job:
        return cls(
            id=job_id, status=JobStatus.QUEUED, model=spec.model, sha256=spec.sha256, count=spec.count, done=0,
            seed=spec.seed, truncation=spec.truncation, fmt=spec.fmt, quality=spec.quality, priority=spec.priority,
            owner=spec.owner, unique=spec.unique, collection=spec.collection, novel=spec.novel, chunk_size=chunk_size,
            created_at=now, expires_at=expires_at, crowd=spec.crowd, labels=spec.labels,
        )  # fmt: skip

    def to_fields(self) -> dict[str, str | int | float]:
        """The hash fields a new job is written with (the inverse of ``from_fields``)."""
        return {
            "id": self.id,
            "status": self.status.value,
            "model": self.model,
            "sha256": self.sha256,
            "count": self.count,
            "done": self.done,
            "seed": self.seed,
            "truncation": "" if self.truncation is None else repr(self.truncation),
            "format": self.fmt,
            "quality": self.quality,
            "priority": self.priority.value,
            "owner": self.owner,
            "unique": int(self.unique),
            "collection": self.collection,
            "novel": int(self.novel),
            "chunk_size": self.chunk_size,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "crowd": _crowd_field(self.crowd),
            "labels": int(self.labels),
        }

    @property
    def sequential(self) -> bool:
        """One worker computes the job in order (unique or novel: image i depends on those before it)."""
        return self.unique or self.novel

    def expired(self, now: float | None = None) -> bool:
        return (time.time() if now is None else now) >= self.expires_at

    def status_at(self, now: float | None = None) -> JobStatus:
        """The status a client sees: past ``expires_at`` a job that was not stopped reads as expired."""
        if not self.status.stopped and self.expired(now):
            return JobStatus.EXPIRED
        return self.status

    def request(self) -> dict[str, Any]:
        """The request body that makes this job again, image for image (its model pinned by version)."""
        body: dict[str, Any] = {"model": self.model, "count": self.count, "seed": self.seed}
        if self.truncation is not None:
            body["truncation"] = self.truncation
        body.update(format=self.fmt, quality=self.quality)
        if self.unique:
            body["unique"] = True
        if self.collection:
            body["collection"] = self.collection
        if self.novel:
            body["novel"] = True
        if not self.labels:
            body["labels"] = False
        return {**body, **self.crowd.to_dict()}

    def view(self, now: float | None = None) -> dict[str, Any]:
        """The public view of the job (API.md's job object)."""
        return {
            "id": self.id,
            "status": self.status_at(now).value,
            "model": self.model,
            "count": self.count,
            "done": self.done,
            "seed": self.seed,
            "truncation": self.truncation,
            "format": self.fmt,
            "priority": self.priority.value,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "expires_at": self.expires_at,
            "error": self.error,
            "attributes": dict(self.crowd.attributes),
            "distribution": {name: dict(shares) for name, shares in self.crowd.distribution.items()},
            "identities": self.crowd.identities,
            "per_identity": self.crowd.per_identity,
            "variation": self.crowd.variation if self.crowd.identities else None,
            "labels": self.labels,
        }


@dataclass(frozen=True)
class WorkItem:
    stream: str
    entry_id: str
    job_id: str
    chunk: int
    start: int
    stop: int
    sequential: bool = False  # one entry for a whole unique job, computed chunk after chunk
    priority: Priority = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "priority", K.stream_priority(self.stream))

    @property
    def images(self) -> int:
        return self.stop - self.start

    @classmethod
    def from_entry(cls, stream: str, entry_id: str, fields: dict[str, str]) -> WorkItem:
        return cls(
            stream,
            entry_id,
            fields["job"],
            int(fields["chunk"]),
            int(fields["start"]),
            int(fields["stop"]),
            fields.get("sequential") == "1",
        )
