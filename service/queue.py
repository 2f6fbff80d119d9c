"""The job queue on Redis Streams: jobs, their chunks (work items), completion and results.

A job is a hash. Its images are split into chunks of at most C, each one a stream entry. Workers
read entries with a consumer group; an entry stays pending until its chunk is complete, so a dead
worker's entries are reclaimed by another (XAUTOCLAIM). Completion is one Lua script: store the
result, mark the chunk done (SADD, so progress counts each chunk once), then XACK and XDEL.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from service import constants as K
from service.errors import NotFound

log = logging.getLogger(__name__)

TERMINAL = ("succeeded", "failed", "cancelled", "expired")

# KEYS: job, done set, result, stream.  ARGV: chunk, images, tar, offsets, ttl, group, entry id, now.
_COMPLETE_CHUNK = """
local function ack()
  redis.call('XACK', KEYS[4], ARGV[6], ARGV[7])
  redis.call('XDEL', KEYS[4], ARGV[7])
end
if redis.call('EXISTS', KEYS[1]) == 0 then ack() return {-1, 0} end
local status = redis.call('HGET', KEYS[1], 'status')
if status == 'cancelled' or status == 'failed' then ack() return {-2, 0} end
redis.call('HSET', KEYS[3], 'tar', ARGV[3], 'offsets', ARGV[4])
redis.call('EXPIRE', KEYS[3], ARGV[5])
local done = tonumber(redis.call('HGET', KEYS[1], 'done'))
local finished = 0
if redis.call('SADD', KEYS[2], ARGV[1]) == 1 then
  redis.call('EXPIRE', KEYS[2], ARGV[5])
  done = redis.call('HINCRBY', KEYS[1], 'done', ARGV[2])
  if done >= tonumber(redis.call('HGET', KEYS[1], 'count')) then
    redis.call('HSET', KEYS[1], 'status', 'succeeded', 'finished_at', ARGV[8])
    finished = 1
  end
end
ack()
return {done, finished}
"""

# KEYS: job.  ARGV: now.  Marks a queued job running, once.
_MARK_RUNNING = """
if redis.call('HGET', KEYS[1], 'status') == 'queued' then
  redis.call('HSET', KEYS[1], 'status', 'running', 'started_at', ARGV[1])
  return 1
end
return 0
"""

# KEYS: job.  ARGV: now.  Cancels a job that has not finished; returns its status afterwards.
_CANCEL = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return nil end
if status == 'queued' or status == 'running' then
  redis.call('HSET', KEYS[1], 'status', 'cancelled', 'finished_at', ARGV[1])
  return 'cancelled'
end
return status
"""


@dataclass(frozen=True)
class JobSpec:
    model: str  # name@version, resolved by the API
    sha256: str
    count: int
    seed: int
    truncation: float | None
    fmt: str
    quality: int
    priority: str


@dataclass(frozen=True)
class WorkItem:
    stream: str
    entry_id: str
    job_id: str
    chunk: int
    start: int
    stop: int


def _decode(raw: dict[Any, Any]) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in raw.items()}


def job_view(fields: dict[str, str]) -> dict[str, Any]:
    """The public view of a job hash (API.md's job object)."""

    def opt_float(name: str) -> float | None:
        value = fields.get(name, "")
        return float(value) if value else None

    return {
        "id": fields["id"],
        "status": fields["status"],
        "model": fields["model"],
        "count": int(fields["count"]),
        "done": int(fields.get("done", 0)),
        "seed": int(fields["seed"]),
        "truncation": opt_float("truncation"),
        "format": fields["format"],
        "priority": fields["priority"],
        "created_at": opt_float("created_at"),
        "started_at": opt_float("started_at"),
        "finished_at": opt_float("finished_at"),
        "expires_at": opt_float("expires_at"),
        "error": fields.get("error") or None,
    }


class JobQueue:
    """Producer and consumer sides of the queue, on one async Redis client (bytes, not decoded)."""

    def __init__(self, client: aioredis.Redis, chunk_size: int, job_ttl_s: int, result_ttl_s: int) -> None:
        self.redis = client
        self.chunk_size = chunk_size
        self.job_ttl_s = job_ttl_s
        self.result_ttl_s = result_ttl_s
        self._complete = client.register_script(_COMPLETE_CHUNK)
        self._mark_running = client.register_script(_MARK_RUNNING)
        self._cancel = client.register_script(_CANCEL)

    async def ensure_groups(self) -> None:
        for stream in K.STREAM_ORDER:
            try:
                await self.redis.xgroup_create(stream, K.WORKER_GROUP, id="0", mkstream=True)
            except aioredis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    async def create_job(self, spec: JobSpec) -> dict[str, Any]:
        """Write the job hash and enqueue its chunks; returns the job view."""
        job_id = secrets.token_urlsafe(16)
        now = time.time()
        fields = {
            "id": job_id,
            "status": "queued",
            "model": spec.model,
            "sha256": spec.sha256,
            "count": spec.count,
            "done": 0,
            "seed": spec.seed,
            "truncation": "" if spec.truncation is None else repr(spec.truncation),
            "format": spec.fmt,
            "quality": spec.quality,
            "priority": spec.priority,
            "chunk_size": self.chunk_size,
            "created_at": now,
            "expires_at": now + self.job_ttl_s,
        }
        stream = K.STREAMS[spec.priority]
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(K.job_key(job_id), mapping=fields)  # type: ignore[arg-type]
            pipe.expire(K.job_key(job_id), self.job_ttl_s)
            for chunk, start in enumerate(range(0, spec.count, self.chunk_size)):
                stop = min(spec.count, start + self.chunk_size)
                pipe.xadd(stream, {"job": job_id, "chunk": chunk, "start": start, "stop": stop})
            await pipe.execute()
        return job_view({k: str(v) for k, v in fields.items()})

    async def get_job(self, job_id: str) -> dict[str, str]:
        raw = await self.redis.hgetall(K.job_key(job_id))
        if not raw:
            raise NotFound(f"no job with id {job_id!r} (it may have expired)", {"id": job_id})
        return _decode(raw)

    async def cancel_job(self, job_id: str) -> dict[str, str]:
        """Cancel a queued or running job: workers skip its remaining chunks. Finished jobs stay as they are."""
        if await self._cancel(keys=[K.job_key(job_id)], args=[time.time()]) is None:
            raise NotFound(f"no job with id {job_id!r} (it may have expired)", {"id": job_id})
        return await self.get_job(job_id)

    async def read_work(self, consumer: str, count: int, block_ms: int) -> list[WorkItem]:
        """New entries for this consumer, interactive first; blocks up to block_ms when there are none."""
        for stream in K.STREAM_ORDER:
            items = await self._read(consumer, {stream: ">"}, count, None)
            if items:
                return items
        return await self._read(consumer, {s: ">" for s in K.STREAM_ORDER}, count, block_ms)

    async def _read(self, consumer: str, streams: dict[str, str], count: int, block: int | None) -> list[WorkItem]:
        response: Any = await self.redis.xreadgroup(K.WORKER_GROUP, consumer, streams, count=count, block=block)  # type: ignore[arg-type]
        items = []
        for stream, entries in response or []:
            for entry_id, fields in entries:
                items.append(_work_item(stream.decode(), entry_id.decode(), _decode(fields)))
        return items

    async def reclaim(self, consumer: str, min_idle_ms: int, count: int) -> list[WorkItem]:
        """Take over entries that another consumer has held idle for at least min_idle_ms."""
        items: list[WorkItem] = []
        for stream in K.STREAM_ORDER:
            response: Any = await self.redis.xautoclaim(
                stream, K.WORKER_GROUP, consumer, min_idle_time=min_idle_ms, start_id="0-0", count=count
            )
            entries = response[1]  # Redis 7 appends a third element, the ids of deleted entries
            items += [_work_item(stream, e.decode(), _decode(f)) for e, f in entries if f]
        if items:
            await self.redis.incrby(K.REDELIVERIES_KEY, len(items))
        return items

    async def refresh_claims(self, consumer: str, items: list[WorkItem]) -> None:
        """Reset the idle time of entries still being worked on, so nobody reclaims them."""
        for stream in K.STREAM_ORDER:
            ids: list[Any] = [i.entry_id for i in items if i.stream == stream]
            if ids:
                await self.redis.xclaim(stream, K.WORKER_GROUP, consumer, 0, ids, justid=True)

    async def mark_running(self, job_id: str) -> None:
        await self._mark_running(keys=[K.job_key(job_id)], args=[time.time()])

    async def complete_chunk(self, item: WorkItem, images: int, tar: bytes, offsets: list[int]) -> tuple[int, bool]:
        """Store the chunk's result, count it once, then ack.

        Returns the job's done count (negative when the job is gone or cancelled) and whether this
        very call completed the job.
        """
        keys = [K.job_key(item.job_id), K.job_done_key(item.job_id), K.result_key(item.job_id, item.chunk), item.stream]
        args: list[bytes | str | int | float] = [
            item.chunk,
            images,
            tar,
            json.dumps(offsets),
            self.result_ttl_s,
            K.WORKER_GROUP,
            item.entry_id,
            time.time(),
        ]
        done, finished = await self._complete(keys=keys, args=args)
        return int(done), bool(finished)

    async def skip(self, item: WorkItem) -> None:
        """Ack and drop an entry whose job is gone or cancelled."""
        await self.redis.xack(item.stream, K.WORKER_GROUP, item.entry_id)
        await self.redis.xdel(item.stream, item.entry_id)

    async def fail_job(self, item: WorkItem, error: str) -> None:
        """Mark the job failed (a chunk cannot be computed), and drop its entry."""
        key = K.job_key(item.job_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping={"status": "failed", "error": error, "finished_at": time.time()})
            pipe.xack(item.stream, K.WORKER_GROUP, item.entry_id)
            pipe.xdel(item.stream, item.entry_id)
            await pipe.execute()

    async def chunk_done(self, job_id: str, chunk: int) -> bool:
        return bool(await self.redis.sismember(K.job_done_key(job_id), str(chunk)))

    async def chunk_result(self, job_id: str, chunk: int) -> tuple[bytes, list[int]]:
        values: list[Any] = await self.redis.hmget(K.result_key(job_id, chunk), ["tar", "offsets"])
        tar, offsets = values
        if tar is None or offsets is None:
            raise NotFound(f"result of chunk {chunk} of job {job_id!r} has expired", {"id": job_id, "chunk": chunk})
        return bytes(tar), json.loads(offsets)

    async def depth(self) -> dict[str, dict[str, int]]:
        """Per priority: entries not yet delivered (lag) and delivered but not acked (pending)."""
        out = {}
        for priority, stream in K.STREAMS.items():
            groups = await self.redis.xinfo_groups(stream) if await self.redis.exists(stream) else []
            info = next((g for g in groups if g["name"] == K.WORKER_GROUP.encode()), None)
            out[priority] = {
                "lag": int(info.get("lag") or 0) if info else 0,
                "pending": int(info["pending"]) if info else 0,
            }
        return out


def _work_item(stream: str, entry_id: str, fields: dict[str, str]) -> WorkItem:
    return WorkItem(stream, entry_id, fields["job"], int(fields["chunk"]), int(fields["start"]), int(fields["stop"]))
