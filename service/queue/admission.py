"""Admission control: refuse new work (429 with Retry-After) when the queue or the result store is full.

The budgets are soft: jobs admitted at the same instant each see the room left before any of them,
so the queue can overshoot by one job per concurrent request (bench/bench_overload.py measures it). Retry-After is
computed from the measured drain rate (images completed per second over the last minute), or, for the
result store, from when the next stored results expire.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from service.queue import keys as K
from service.settings import Settings
from synthgen.core.errors import QueueFull, TooLarge

DRAIN_WINDOW_S = 60
DEFAULT_RETRY_S = 30
MAX_RETRY_S = 600


@dataclass(frozen=True)
class Budget:
    max_queued_images: int
    max_result_bytes: int
    result_ttl_s: int

    @classmethod
    def from_settings(cls, settings: Settings) -> Budget:
        return cls(settings.max_queued_images, settings.max_result_bytes, settings.result_ttl_s)


@dataclass(frozen=True)
class QueueStats:
    queued_images: int
    drain_rate: float  # images per second, over the last minute
    result_bytes: int
    next_expiry_s: float  # seconds until the earliest stored results expire (0 when none are stored)


async def read_stats(
    client: aioredis.Redis, result_ttl_s: int, now: float | None = None, keys: K.Keyspace = K.DEFAULT
) -> QueueStats:
    """The queue's statistics, summed over its shards (one MGET per shard, all at once)."""
    now = time.time() if now is None else now
    drain_now = int(now) // K.DRAIN_BUCKET_S
    # whole buckets only: the current one is still filling
    drain_buckets = range(drain_now - DRAIN_WINDOW_S // K.DRAIN_BUCKET_S, drain_now)
    first = int(now) // K.RESULT_BYTES_BUCKET_S
    last = (int(now) + result_ttl_s) // K.RESULT_BYTES_BUCKET_S + 1
    byte_buckets = range(first, last + 1)

    async def shard_stats(shard: int) -> list[int]:
        # one MGET per shard: its keys share the shard's slot, so this works on a cluster too
        names = [keys.queued_images(shard), *(keys.drained(shard, b) for b in drain_buckets)]
        values: list[Any] = await client.mget(names + [keys.result_bytes(shard, b) for b in byte_buckets])
        return [int(v or 0) for v in values]

    shards = await asyncio.gather(*(shard_stats(s) for s in range(keys.shards)))
    split = 1 + len(drain_buckets)
    queued = sum(values[0] for values in shards)
    drained = [v for values in shards for v in values[1:split]]
    per_bucket = [sum(bucket) for bucket in zip(*(values[split:] for values in shards), strict=True)]
    nonzero = [i for i, v in enumerate(per_bucket) if v > 0]
    next_expiry = max(0.0, (first + nonzero[0] + 1) * K.RESULT_BYTES_BUCKET_S - now) if nonzero else 0.0
    return QueueStats(
        queued_images=max(0, queued),
        drain_rate=sum(drained) / DRAIN_WINDOW_S,
        result_bytes=sum(per_bucket),
        next_expiry_s=next_expiry,
    )


def _clamp_retry(seconds: float) -> int:
    return int(min(MAX_RETRY_S, max(1, math.ceil(seconds))))


async def admit(client: aioredis.Redis, budget: Budget, count: int, keys: K.Keyspace = K.DEFAULT) -> QueueStats:
    """Raise QueueFull (429) or TooLarge (413) when a job of ``count`` images cannot be taken now."""
    if count > budget.max_queued_images:
        raise TooLarge(
            f"a job of {count} images can never fit the queue budget of {budget.max_queued_images} images; split it",
            {"count": count, "max_queued_images": budget.max_queued_images},
        )
    stats = await read_stats(client, budget.result_ttl_s, keys=keys)
    excess = stats.queued_images + count - budget.max_queued_images
    if excess > 0:
        retry = _clamp_retry(excess / stats.drain_rate) if stats.drain_rate > 0 else DEFAULT_RETRY_S
        raise QueueFull(
            f"the queue holds {stats.queued_images} images and its budget is {budget.max_queued_images}; "
            f"at the current {stats.drain_rate:.0f} images/s there is room for {count} more in about {retry} s",
            retry,
            {"queued_images": stats.queued_images, "budget": budget.max_queued_images, "drain_rate": stats.drain_rate},
        )
    if stats.result_bytes >= budget.max_result_bytes:
        retry = _clamp_retry(stats.next_expiry_s) if stats.next_expiry_s > 0 else DEFAULT_RETRY_S
        raise QueueFull(
            f"stored results take {stats.result_bytes} bytes, over the budget of {budget.max_result_bytes}; "
            f"the next results expire in about {retry} s",
            retry,
            {"result_bytes": stats.result_bytes, "budget": budget.max_result_bytes},
        )
    return stats
