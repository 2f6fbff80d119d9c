"""Taking a new job: limits, quota charge, admission control, enqueue, and the refund when it is not taken.

``submit`` is the one decision below the HTTP layer: the route translates the request into an
``Order`` and the job back into a response; a worker, a benchmark or a test can call it the same way.
Whatever fails after the quota was charged (admission refuses, Redis breaks), the charge is given back.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass, field

import redis.asyncio as aioredis

from service.queue import quotas
from service.queue.admission import Budget, admit
from service.queue.jobs import Job, JobSpec
from service.queue.streams import JobQueue
from service.settings import Settings
from service.telemetry import instruments as M
from synthgen.core.crowd import Crowd
from synthgen.core.errors import InvalidRequest, SynthgenError
from synthgen.core.images import DEFAULT_FORMAT, DEFAULT_QUALITY, ImageFormat
from synthgen.core.jobs import Priority
from synthgen.core.latents import MAX_SEED
from synthgen.core.package import ModelPackage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Order:
    """What a caller asks for, before the server's defaults (seed, priority) are applied.

    ``count`` may be None when the crowd has identities: then it is identities x per_identity.
    """

    count: int | None
    seed: int | None = None
    truncation: float | None = None
    fmt: ImageFormat = DEFAULT_FORMAT
    quality: int = DEFAULT_QUALITY
    priority: Priority | None = None
    unique: bool = False
    collection: str | None = None
    novel: bool = False
    crowd: Crowd = field(default_factory=Crowd)
    labels: bool = True


def _check_limits(order: Order, package: ModelPackage, settings: Settings) -> int:
    """Check the order against the model and the server's limits; returns the job's image count."""
    count = order.crowd.validated(package.attributes, order.count)
    if count > settings.max_count:
        raise InvalidRequest(
            f"count must be at most {settings.max_count} on this server, got {count}",
            {"field": "count", "max": settings.max_count},
        )
    if order.novel and package.privacy_index_path is None:
        raise InvalidRequest(
            f"novel needs a model package with a training index; {package.ref} has none "
            "(export it with synthgen export --train-index)",
            {"field": "novel", "model": package.ref},
        )
    return count


def job_spec(order: Order, package: ModelPackage, tenant: str, settings: Settings, count: int) -> JobSpec:
    """The order with the server's defaults: a random seed, and interactive priority for small jobs."""
    seed = order.seed if order.seed is not None else secrets.randbelow(MAX_SEED + 1)
    small = count <= settings.interactive_max_count
    priority = order.priority or (Priority.INTERACTIVE if small else Priority.BULK)
    return JobSpec(
        model=package.ref, sha256=package.sha256, count=count, seed=seed, truncation=order.truncation,
        fmt=order.fmt, quality=order.quality, priority=priority, owner=tenant, unique=order.unique,
        collection=order.collection or "", novel=order.novel, crowd=order.crowd, labels=order.labels,
    )  # fmt: skip


async def submit(
    client: aioredis.Redis, queue: JobQueue, settings: Settings, package: ModelPackage, tenant: str, order: Order
) -> Job:
    """Check, charge, admit and enqueue one job; raises a SynthgenError (nothing charged) when it is refused."""
    count = _check_limits(order, package, settings)
    limits = quotas.Quotas.from_settings(settings)
    await quotas.check_concurrency(client, tenant, limits, queue.keys)
    await quotas.charge(client, tenant, limits, count)
    spec = job_spec(order, package, tenant, settings, count)
    try:
        await admit(client, Budget.from_settings(settings), count, queue.keys)
        job = await queue.create_job(spec)
    except BaseException as exc:
        if isinstance(exc, SynthgenError):
            M.ADMISSIONS_REJECTED.labels(exc.code).inc()
        await _refund(client, tenant, limits, count)
        raise
    try:
        await quotas.register_job(client, tenant, job.id, settings.result_ttl_s)
    except aioredis.RedisError as exc:  # the job is queued: answering an error now would invite a duplicate
        log.warning("job %s is queued but not counted in its key's concurrent jobs: %s", job.id, exc)
    M.JOBS_CREATED.labels(spec.model, spec.priority.value).inc()
    return job


async def _refund(client: aioredis.Redis, tenant: str, limits: quotas.Quotas, count: int) -> None:
    try:
        await quotas.refund(client, tenant, limits, count)
    except aioredis.RedisError as exc:
        log.error("could not give back the %d images charged to a refused job: %s", count, exc)
