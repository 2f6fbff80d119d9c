"""The job queue on Redis Streams: jobs, their chunks (work items), completion and results.

A job is a hash. Its images are split into chunks of at most C, each one a stream entry. Workers
read entries with a consumer group; an entry stays pending until its chunk is complete, so a dead
worker's entries are reclaimed by another (XAUTOCLAIM). Completion is one Lua script
(``queue_scripts.COMPLETE_CHUNK``): store the result, mark the chunk done, then XACK and XDEL.

A job's results are kept until its ``expires_at``; after that the job reads as ``expired`` for
``expired_retention_s`` more, and then it is gone.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from typing import Any

import redis.asyncio as aioredis

from service.queue import keys as K
from service.queue import scripts as S
from service.queue.jobs import Job, JobSpec, QueueConfig, WorkItem
from service.queue.result_store import RedisResultStore, ResultStore
from synthgen.core.errors import NotFound
from synthgen.core.jobs import JobStatus, Priority

log = logging.getLogger(__name__)


SHARDED_BLOCK_MS = 50  # with several shards, an idle worker's blocking reads end this often to start over


def _label_counts(counts: dict[str, int] | None) -> str:
    """A chunk's predicted-label counts as the completion scripts take them ('' for none)."""
    return json.dumps(counts, separators=(",", ":")) if counts else ""


class LayoutMismatch(RuntimeError):
    """The Redis holds a queue written with another shard count or key tagging than this process's."""


def _decode(raw: dict[Any, Any]) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in raw.items()}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _stream_replies(response: Any) -> list[tuple[Any, Any]]:
    """XREADGROUP's reply as (stream, entries) pairs: a list in RESP2, a dict in RESP3 and from the cluster client."""
    if not response:
        return []
    return list(response.items()) if isinstance(response, dict) else list(response)


class JobQueue:
    """Producer and consumer sides of the queue, on one async Redis client (bytes, not decoded).

    The client is a plain one, or redis-py's cluster client (``service/queue/connection.py``): every
    command and script here names keys of one shard only, so each lands on one slot.
    """

    def __init__(self, client: aioredis.Redis, config: QueueConfig, store: ResultStore | None = None) -> None:
        self.redis = client
        self.config = config
        self.keys = config.keyspace
        self.store: ResultStore = store or RedisResultStore()
        self._complete = client.register_script(S.COMPLETE_CHUNK)
        self._mark_running = client.register_script(S.MARK_RUNNING)
        self._stop_job = client.register_script(S.STOP_JOB)
        self._complete_unique = client.register_script(S.COMPLETE_UNIQUE_CHUNK)
        self._next_shard = 0  # where the next read starts, so every shard gets its turn first

    @property
    def chunk_size(self) -> int:
        return self.config.chunk_size

    async def ensure_groups(self) -> None:
        """Create the consumer groups, and refuse a Redis that another process uses with another key layout."""
        await self.check_layout()
        for stream in self.keys.all_streams():
            try:
                await self.redis.xgroup_create(stream, K.WORKER_GROUP, id="0", mkstream=True)
            except aioredis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    async def check_layout(self) -> None:
        """Processes with different shard counts would look for a job in different places: refuse to start."""
        await self.redis.set(K.LAYOUT_KEY, self.keys.layout, nx=True)
        stored: Any = await self.redis.get(K.LAYOUT_KEY)
        if stored is not None and stored.decode() != self.keys.layout:
            raise LayoutMismatch(
                f"this Redis holds a queue with key layout {stored.decode()!r} but this process is set up for "
                f"{self.keys.layout!r}: give every process the same SYNTHGEN_QUEUE_SHARDS and SYNTHGEN_REDIS_CLUSTER"
            )

    def _job_shard(self, spec: JobSpec) -> int | None:
        return self.keys.collection_shard(spec.owner, spec.collection) if spec.collection else None

    async def create_job(self, spec: JobSpec) -> Job:
        """Write the job hash and enqueue its chunks, atomically (one shard: one slot); returns the job."""
        now = time.time()
        job_id = self.keys.new_job_id(self._job_shard(spec))
        job = Job.new(job_id, spec, self.chunk_size, now, math.ceil(now + self.config.result_ttl_s))
        shard = self.keys.shard_of(job.id)
        key = self.keys.job(job.id)
        stream = self.keys.stream(shard, spec.priority)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping=job.to_fields())  # type: ignore[arg-type]
            pipe.expireat(key, int(job.expires_at) + self.config.expired_retention_s)
            pipe.incrby(self.keys.queued_images(shard), spec.count)
            if spec.sequential:
                # each image depends on every one before it, so one worker computes the job in order
                pipe.xadd(stream, {"job": job.id, "chunk": 0, "start": 0, "stop": spec.count, "sequential": 1})
            else:
                for chunk, start in enumerate(range(0, spec.count, self.chunk_size)):
                    stop = min(spec.count, start + self.chunk_size)
                    pipe.xadd(stream, {"job": job.id, "chunk": chunk, "start": start, "stop": stop})
            await pipe.execute()
        return job

    async def get_job(self, job_id: str) -> Job:
        raw = await self.redis.hgetall(self.keys.job(job_id))
        if not raw:
            raise NotFound(f"no job with id {job_id!r} (it may have expired)", {"id": job_id})
        return Job.from_fields(_decode(raw))

    async def stop_job(self, job_id: str, status: JobStatus = JobStatus.CANCELLED, error: str = "") -> Job:
        """Cancel (or fail) a queued or running job: workers skip its remaining chunks. Finished jobs stay as they are."""
        keys = [self.keys.job(job_id), self.keys.queued_images(self.keys.shard_of(job_id))]
        result = await self._stop_job(keys=keys, args=[time.time(), status.value, error])
        if result is None:
            raise NotFound(f"no job with id {job_id!r} (it may have expired)", {"id": job_id})
        return await self.get_job(job_id)

    def _shard_turns(self) -> list[int]:
        first = self._next_shard
        self._next_shard = (first + 1) % self.keys.shards
        return [(first + i) % self.keys.shards for i in range(self.keys.shards)]

    async def read_work(self, consumer: str, count: int, block_ms: int, include_bulk: bool = True) -> list[WorkItem]:
        """New entries for this consumer, interactive first; blocks up to block_ms when there are none.

        With several shards, the shards are read one after the other (starting with a different one each
        time), interactive streams first; when all are empty, one short blocking read per shard runs at
        once, so a blocking read may return up to one entry per shard beyond ``count``.
        """
        if self.keys.shards == 1:
            interactive, bulk = self.keys.stream_order(0)
            items = await self._read(consumer, {interactive: ">"}, count, None)
            if items:
                return items
            streams = {interactive: ">", bulk: ">"} if include_bulk else {interactive: ">"}
            return await self._read(consumer, streams, count, block_ms)
        turns = self._shard_turns()
        priorities = (Priority.INTERACTIVE, Priority.BULK) if include_bulk else (Priority.INTERACTIVE,)
        items = []
        for priority in priorities:
            for shard in turns:
                if len(items) >= count:
                    return items
                items += await self._read(consumer, {self.keys.stream(shard, priority): ">"}, count - len(items), None)
        if items:
            return items
        block = max(1, min(block_ms, SHARDED_BLOCK_MS))
        reads = [self._read(consumer, {self.keys.stream(shard, p): ">" for p in priorities}, 1, block) for shard in turns]
        found = [item for part in await asyncio.gather(*reads) for item in part]
        return sorted(found, key=lambda i: i.priority is not Priority.INTERACTIVE)

    async def _read(self, consumer: str, streams: dict[str, str], count: int, block: int | None) -> list[WorkItem]:
        response: Any = await self.redis.xreadgroup(K.WORKER_GROUP, consumer, streams, count=count, block=block)  # type: ignore[arg-type]
        items = []
        for stream, entries in _stream_replies(response):
            for entry_id, fields in entries:
                items.append(WorkItem.from_entry(_text(stream), entry_id.decode(), _decode(fields)))
        # one blocking read over both streams can return entries of each: interactive goes first
        return sorted(items, key=lambda i: i.priority is not Priority.INTERACTIVE)

    async def reclaim(self, consumer: str, min_idle_ms: int, count: int) -> list[WorkItem]:
        """Take over entries that another consumer has held idle for at least min_idle_ms."""
        items: list[WorkItem] = []
        for stream in self.keys.all_streams():
            if len(items) >= count:
                break
            response: Any = await self.redis.xautoclaim(
                stream, K.WORKER_GROUP, consumer, min_idle_time=min_idle_ms, start_id="0-0", count=count - len(items)
            )
            entries = response[1]  # Redis 7 appends a third element, the ids of deleted entries
            items += [WorkItem.from_entry(stream, e.decode(), _decode(f)) for e, f in entries if f]
        if items:
            await self.redis.incrby(K.REDELIVERIES_KEY, len(items))
        return items

    async def take_over_all(self, consumer: str, batch: int = 1000) -> list[WorkItem]:
        """Claim every pending entry of every consumer, idle or not (for the only consumer of a server,
        at start-up: whatever is pending was left by a process that is gone)."""
        items: list[WorkItem] = []
        for stream in self.keys.all_streams():
            cursor = "0-0"
            while True:
                response: Any = await self.redis.xautoclaim(
                    stream, K.WORKER_GROUP, consumer, min_idle_time=0, start_id=cursor, count=batch
                )
                cursor = _text(response[0])
                items += [WorkItem.from_entry(stream, e.decode(), _decode(f)) for e, f in response[1] if f]
                if cursor == "0-0":
                    break
        if items:
            await self.redis.incrby(K.REDELIVERIES_KEY, len(items))
        return items

    async def refresh_claims(self, consumer: str, items: list[WorkItem]) -> None:
        """Reset the idle time of entries still being worked on, so nobody reclaims them."""
        by_stream: dict[str, list[Any]] = {}
        for item in items:
            by_stream.setdefault(item.stream, []).append(item.entry_id)
        for stream, ids in by_stream.items():
            await self.redis.xclaim(stream, K.WORKER_GROUP, consumer, 0, ids, justid=True)

    async def mark_running(self, job_id: str) -> None:
        await self._mark_running(keys=[self.keys.job(job_id)], args=[time.time()])

    async def complete_chunk(
        self, item: WorkItem, images: int, tar: bytes, offsets: list[int], expires_at: float,
        label_counts: dict[str, int] | None = None,
    ) -> tuple[int, bool]:  # fmt: skip
        """Store the chunk's result, count it (and its predicted labels) once, then ack.

        Returns the job's done count (negative when the job is gone, cancelled or expired) and
        whether this very call completed the job.
        """
        now = time.time()
        expire = math.ceil(expires_at)
        stored = await self.store.write(item.job_id, item.chunk, tar, expire)
        bytes_bucket = expire // K.RESULT_BYTES_BUCKET_S
        shard, ks = self.keys.shard_of(item.job_id), self.keys
        keys = [
            ks.job(item.job_id),
            ks.job_done(item.job_id),
            ks.result(item.job_id, item.chunk),
            item.stream,  # the job's shard's stream: every key here shares the shard's slot
            ks.result_bytes(shard, bytes_bucket),
            ks.drained(shard, int(now) // K.DRAIN_BUCKET_S),
            ks.queued_images(shard),
            ks.job_progress(item.job_id),
            ks.job_predicted(item.job_id),
        ]
        args: list[bytes | str | int | float] = [
            item.chunk, images, stored, json.dumps(offsets), expire, K.WORKER_GROUP, item.entry_id, now,
            len(tar), (bytes_bucket + 1) * K.RESULT_BYTES_BUCKET_S, _label_counts(label_counts),
        ]  # fmt: skip
        done, finished = await self._complete(keys=keys, args=args)
        return int(done), bool(finished)

    async def complete_unique_chunk(
        self, job_id: str, chunk: int, images: int, tar: bytes, offsets: list[int], expires_at: float,
        embeddings: bytes, next_candidate: int, collection_key: str | None, label_counts: dict[str, int] | None = None,
    ) -> tuple[int, bool]:  # fmt: skip
        """Store one chunk of a unique job with its acceptance state; the job's entry stays pending."""
        expire = math.ceil(expires_at)
        stored = await self.store.write(job_id, chunk, tar, expire)
        ks = self.keys
        state = ks.unique_state(job_id)
        keys = [
            ks.job(job_id), ks.job_done(job_id), ks.result(job_id, chunk), state,
            collection_key or state, ks.job_progress(job_id), ks.queued_images(ks.shard_of(job_id)),
            ks.job_predicted(job_id),
        ]  # fmt: skip
        args: list[bytes | str | int | float] = [
            chunk, images, stored, json.dumps(offsets), expire, time.time(), embeddings, next_candidate,
            "1" if collection_key else "0", _label_counts(label_counts),
        ]  # fmt: skip
        done, finished = await self._complete_unique(keys=keys, args=args)
        return int(done), bool(finished)

    async def unique_state(self, job_id: str) -> dict[str, bytes]:
        raw: Any = await self.redis.hgetall(self.keys.unique_state(job_id))
        return {k.decode(): v for k, v in raw.items()}

    async def skip(self, item: WorkItem, release_images: int = 0) -> None:
        """Ack and drop an entry whose job is gone, cancelled, failed or expired."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xack(item.stream, K.WORKER_GROUP, item.entry_id)
            pipe.xdel(item.stream, item.entry_id)
            if release_images:
                pipe.decrby(self.keys.queued_images(self.keys.shard_of(item.job_id)), release_images)
            await pipe.execute()

    async def fail_job(self, item: WorkItem, error: str) -> None:
        """Mark the job failed (a chunk cannot be computed), and drop its entry."""
        await self.stop_job(item.job_id, JobStatus.FAILED, error)
        await self.skip(item)

    async def wait_for_progress(self, job_id: str, timeout_s: float) -> None:
        """Sleep until a chunk of the job completes, or timeout_s at most (the caller re-checks)."""
        await self.redis.blpop([self.keys.job_progress(job_id)], timeout=timeout_s)

    async def chunk_done(self, job_id: str, chunk: int) -> bool:
        return bool(await self.redis.sismember(self.keys.job_done(job_id), str(chunk)))

    async def chunk_result(self, job_id: str, chunk: int) -> tuple[bytes, list[int]]:
        values: list[Any] = await self.redis.hmget(self.keys.result(job_id, chunk), ["tar", "offsets"])
        stored, offsets = values
        tar = await self.store.read(job_id, chunk, stored) if offsets is not None else None
        if tar is None or offsets is None:
            raise NotFound(f"result of chunk {chunk} of job {job_id!r} has expired", {"id": job_id, "chunk": chunk})
        return bytes(tar), json.loads(offsets)

    async def predicted_counts(self, job_id: str) -> dict[str, int]:
        """The job's predicted-label histogram so far, ``{"name=value": images}`` (each chunk counted once)."""
        raw: Any = await self.redis.hgetall(self.keys.job_predicted(job_id))
        return {_text(k): int(v) for k, v in raw.items()}

    async def depth(self) -> dict[str, dict[str, int]]:
        """Per priority: entries not yet delivered (lag) and delivered but not acked (pending).

        Completed entries are deleted, so a stream holds exactly the lag plus the pending entries
        (this also works on Redis 6, whose XINFO GROUPS has no lag field).
        """
        out: dict[str, dict[str, int]] = {p: {"lag": 0, "pending": 0} for p in Priority}
        for shard in range(self.keys.shards):
            for priority in Priority:
                stream = self.keys.stream(shard, priority)
                length = int(await self.redis.xlen(stream))
                groups = await self.redis.xinfo_groups(stream) if length else []
                info = next((g for g in groups if g["name"] == K.WORKER_GROUP.encode()), None)
                pending = int(info["pending"]) if info else 0
                out[priority]["lag"] += max(0, length - pending)
                out[priority]["pending"] += pending
        return out
