"""The Redis Streams queue against a real redis-server: chunking, exactly-once completion, reclaim."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import redis.asyncio as aioredis

from service.engine.registry import ModelRegistry
from service.queue import keys as K
from service.queue.jobs import JobSpec, QueueConfig
from service.queue.streams import JobQueue
from service.settings import Settings
from service.worker.worker import Worker


def _spec(count: int, priority: str = "bulk", sha256: str = "x" * 64) -> JobSpec:
    return JobSpec("tiny@1", sha256, count, 5, None, "png", 90, priority)


def test_job_is_split_into_chunks_on_its_priority_stream(redis_url: str) -> None:
    async def scenario() -> None:
        client = aioredis.from_url(redis_url)
        queue = JobQueue(client, QueueConfig(chunk_size=32, result_ttl_s=600))
        await queue.ensure_groups()
        job = await queue.create_job(_spec(100))
        entries = await client.xrange(K.STREAM_BULK)
        ranges = [(int(f[b"start"]), int(f[b"stop"])) for _, f in entries]
        assert ranges == [(0, 32), (32, 64), (64, 96), (96, 100)]
        assert await client.xlen(K.STREAM_INTERACTIVE) == 0
        assert 600 < await client.ttl(K.job_key(job.id)) <= 601 + 86_400  # results' TTL (rounded up) plus the expired retention
        assert int(await client.get(K.QUEUED_IMAGES_KEY)) == 100
        await client.aclose()

    asyncio.run(scenario())


def test_a_chunk_completed_twice_is_counted_once(redis_url: str) -> None:
    async def scenario() -> None:
        client = aioredis.from_url(redis_url)
        queue = JobQueue(client, QueueConfig(chunk_size=4, result_ttl_s=600))
        await queue.ensure_groups()
        job = await queue.create_job(_spec(8, priority="interactive"))
        items = await queue.read_work("a", 10, block_ms=100)
        assert [i.chunk for i in items] == [0, 1]
        expires = job.expires_at
        assert await queue.complete_chunk(items[0], 4, b"tar0", [0, 4], expires) == (4, False)
        assert await queue.complete_chunk(items[0], 4, b"tar0", [0, 4], expires) == (4, False)  # a redelivery
        assert await queue.complete_chunk(items[1], 4, b"tar1", [0, 4], expires) == (8, True)
        assert int(await client.get(K.QUEUED_IMAGES_KEY)) == 0  # each image released once
        stored = await queue.get_job(job.id)
        assert stored.status == "succeeded" and stored.done == 8
        assert await queue.chunk_result(job.id, 1) == (b"tar1", [0, 4])
        pending = await client.xpending(K.STREAM_INTERACTIVE, K.WORKER_GROUP)
        assert pending["pending"] == 0 and await client.xlen(K.STREAM_INTERACTIVE) == 0
        await client.aclose()

    asyncio.run(scenario())


def test_entries_of_a_dead_worker_are_reclaimed_and_completed(redis_url: str, tiny_models_dir: Path) -> None:
    settings = Settings(
        redis_url=redis_url, models_dir=tiny_models_dir, default_model="tiny", chunk_size=16, visibility_timeout_s=0.2
    )
    registry = ModelRegistry.from_directory(tiny_models_dir, "tiny")
    sha = registry.default.package.sha256

    async def scenario() -> None:
        client = aioredis.from_url(redis_url)
        queue = JobQueue(client, QueueConfig.from_settings(settings))
        await queue.ensure_groups()
        job = await queue.create_job(_spec(48, sha256=sha))
        taken = await queue.read_work("dead-worker", 10, block_ms=100)  # delivered, then the worker "dies"
        assert len(taken) == 3
        await asyncio.sleep(0.3)  # past the visibility timeout
        stop = asyncio.Event()
        worker = Worker(settings, client, registry, name="rescuer")
        task = asyncio.create_task(worker.run(stop))
        for _ in range(200):
            if (await queue.get_job(job.id)).status == "succeeded":
                break
            await asyncio.sleep(0.05)
        stop.set()
        await task
        final = await queue.get_job(job.id)
        assert final.status == "succeeded" and final.done == 48
        assert int(await client.get(K.REDELIVERIES_KEY) or 0) == 3
        offsets = json.loads((await client.hget(K.result_key(job.id, 2), "offsets")) or b"[]")
        assert len(offsets) == 17  # 16 samples and the end offset
        await client.aclose()

    asyncio.run(scenario())
