"""submit(): the one place that charges a key's quota, admits, enqueues, and refunds what it charged when the job
is not queued after all."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from service.engine.registry import ModelRegistry
from service.queue import keys as K
from service.queue import quotas
from service.queue.jobs import QueueConfig
from service.queue.streams import JobQueue
from service.queue.submit import Order, submit
from service.settings import Settings
from synthgen.core.errors import QueueFull
from synthgen.core.jobs import JobStatus, Priority


async def _quota_used(client: aioredis.Redis, tenant: str) -> int:
    return int(await client.get(K.quota_images_key(tenant, quotas._day())) or 0)


def _settings(redis_url: str, models: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {"redis_url": redis_url, "models_dir": models, "default_model": "tiny", **overrides}
    return Settings(**values)  # type: ignore[arg-type]


def test_a_redis_failure_after_the_charge_refunds_it(redis_url: str, tiny_models_dir: Path) -> None:
    settings = _settings(redis_url, tiny_models_dir, quota_images_per_day=1000)
    package = ModelRegistry.from_directory(tiny_models_dir, "tiny").default.package

    class BrokenQueue(JobQueue):
        async def create_job(self, spec):  # type: ignore[no-untyped-def]
            raise aioredis.ConnectionError("redis went away mid-enqueue")

    async def scenario() -> None:
        client = aioredis.from_url(redis_url)
        queue = BrokenQueue(client, QueueConfig.from_settings(settings))
        with pytest.raises(aioredis.ConnectionError):
            await submit(client, queue, settings, package, "tenant-a", Order(count=300))
        assert await _quota_used(client, "tenant-a") == 0  # the charge was given back
        assert int(await client.get(K.QUEUED_IMAGES_KEY) or 0) == 0
        await client.aclose()

    asyncio.run(scenario())


def test_a_refused_job_is_not_charged_and_an_admitted_one_is(redis_url: str, tiny_models_dir: Path) -> None:
    settings = _settings(redis_url, tiny_models_dir, quota_images_per_day=1000, max_queued_images=500)
    package = ModelRegistry.from_directory(tiny_models_dir, "tiny").default.package

    async def scenario() -> None:
        client = aioredis.from_url(redis_url)
        queue = JobQueue(client, QueueConfig.from_settings(settings))
        await queue.ensure_groups()
        job = await submit(client, queue, settings, package, "tenant-b", Order(count=400))
        assert job.status is JobStatus.QUEUED and job.priority is Priority.BULK and job.owner == "tenant-b"
        assert await _quota_used(client, "tenant-b") == 400
        with pytest.raises(QueueFull):  # 400 queued + 200 > 500
            await submit(client, queue, settings, package, "tenant-b", Order(count=200))
        assert await _quota_used(client, "tenant-b") == 400
        small = await submit(client, queue, settings, package, "tenant-b", Order(count=8, seed=3, collection="crowd"))
        assert small.priority is Priority.INTERACTIVE and small.seed == 3 and small.unique  # a collection implies unique
        await client.aclose()

    asyncio.run(scenario())
