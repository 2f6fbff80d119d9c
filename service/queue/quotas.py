"""Per-key quotas: images a day and jobs at once, counted in Redis.

A key's identity (its tenant, see ``service/api/keys.py``) is what quotas count. ``charge`` and
``refund`` are used together by ``service/queue/submit.py``, which gives back a charge whenever the job
is not queued after all.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from service.queue import keys as K
from service.settings import Settings
from synthgen.core.errors import QuotaExceeded
from synthgen.core.jobs import JobStatus


@dataclass(frozen=True)
class Quotas:
    images_per_day: int  # 0: unlimited
    concurrent_jobs: int  # 0: unlimited

    @classmethod
    def from_settings(cls, settings: Settings) -> Quotas:
        return cls(settings.quota_images_per_day, settings.quota_concurrent_jobs)


def _day() -> str:
    return time.strftime("%Y%m%d", time.gmtime())


def _seconds_to_midnight() -> int:
    now = time.time()
    return int(86_400 - now % 86_400) + 1


async def charge(client: aioredis.Redis, tenant: str, quotas: Quotas, count: int) -> None:
    """Count ``count`` images against the tenant's daily quota, or raise QuotaExceeded (nothing counted)."""
    if quotas.images_per_day:
        key = K.quota_images_key(tenant, _day())
        used = int(await client.incrby(key, count))
        await client.expire(key, 2 * 86_400)
        if used > quotas.images_per_day:
            await client.decrby(key, count)
            retry = _seconds_to_midnight()
            raise QuotaExceeded(
                f"this key may generate {quotas.images_per_day} images a day; {used - count} are used and this job "
                f"asks for {count}; the quota resets at 00:00 UTC",
                retry,
                {"quota": "images_per_day", "limit": quotas.images_per_day, "used": used - count},
            )


async def refund(client: aioredis.Redis, tenant: str, quotas: Quotas, count: int) -> None:
    """Give back images counted for a job that was then refused (queue full)."""
    if quotas.images_per_day:
        await client.decrby(K.quota_images_key(tenant, _day()), count)


async def check_concurrency(client: aioredis.Redis, tenant: str, quotas: Quotas, keys: K.Keyspace = K.DEFAULT) -> None:
    """Raise QuotaExceeded when the tenant already has its maximum of unfinished jobs."""
    if not quotas.concurrent_jobs:
        return
    key = K.tenant_jobs_key(tenant)
    members: Any = await client.smembers(key)
    job_ids = [m.decode() for m in members]
    async with client.pipeline(transaction=False) as pipe:  # one round trip for all of them
        for job_id in job_ids:
            pipe.hmget(keys.job(job_id), ["status", "expires_at"])
        states: list[Any] = await pipe.execute()
    active, finished_ids = 0, []
    for job_id, (status, expires_at) in zip(job_ids, states, strict=True):
        if status is None or not JobStatus(status.decode()).active or time.time() >= float(expires_at):
            finished_ids.append(job_id)
        else:
            active += 1
    if finished_ids:
        await client.srem(key, *finished_ids)
    if active >= quotas.concurrent_jobs:
        raise QuotaExceeded(
            f"this key may run {quotas.concurrent_jobs} jobs at once and has {active} unfinished; "
            "wait for one to finish or cancel one",
            5,
            {"quota": "concurrent_jobs", "limit": quotas.concurrent_jobs, "active": active},
        )


async def register_job(client: aioredis.Redis, tenant: str, job_id: str, ttl_s: int) -> None:
    key = K.tenant_jobs_key(tenant)
    await client.sadd(key, job_id)
    await client.expire(key, ttl_s)
