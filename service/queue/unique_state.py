"""A unique collection's shared state in Redis: the embeddings of every accepted face, and the lock that lets
one job of the collection run at a time (its result depends on what the collection already holds)."""

from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio as aioredis

from service.queue import keys as K

LOCK_TTL_MS = 120_000


class Collection:
    def __init__(self, client: aioredis.Redis, tenant: str, name: str, keys: K.Keyspace = K.DEFAULT) -> None:
        self.redis = client
        self.key = keys.collection(tenant, name)
        self.lock_key = keys.collection_lock(tenant, name)

    async def lock(self, job_id: str) -> None:
        """Wait until this job holds the collection; a takeover of the job's own lock keeps it."""
        while not await self.redis.set(self.lock_key, job_id, nx=True, px=LOCK_TTL_MS):
            holder: Any = await self.redis.get(self.lock_key)
            if holder is not None and holder.decode() == job_id:
                await self.redis.pexpire(self.lock_key, LOCK_TTL_MS)
                return
            await asyncio.sleep(0.2)

    async def keep_locked(self) -> None:
        await self.redis.pexpire(self.lock_key, LOCK_TTL_MS)

    async def unlock(self) -> None:
        await self.redis.delete(self.lock_key)

    async def embeddings(self) -> list[bytes]:
        """Every accepted block of float32 embeddings, of all the collection's jobs, in order."""
        blocks: list[Any] = await self.redis.lrange(self.key, 0, -1)
        return [bytes(b) for b in blocks]
