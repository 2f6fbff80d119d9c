"""The worker: read work items, batch their latents through the decoder, encode, store, ack.

Pipelining: up to ``worker_concurrency`` work items are in flight. Their latents meet in the dynamic
batcher; while the device runs one batch, the encode pool encodes the previous ones.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import redis.asyncio as aioredis

from service.engine.batching import DynamicBatcher
from service.engine.registry import LoadedModel, ModelRegistry
from service.engine.rendering import RenderSpec, encode_chunk, job_inputs
from service.queue import keys as K
from service.queue.jobs import QueueConfig, WorkItem
from service.queue.result_store import ResultStoreFull, make_result_store
from service.queue.streams import JobQueue
from service.settings import Settings
from service.telemetry import instruments as M
from service.telemetry.instruments import ChunkOutcome
from service.worker.interactive import InteractiveServer
from service.worker.unique_runner import UniqueJob, run_unique_job
from synthgen.core.errors import NotFound
from synthgen.core.jobs import JobStatus

log = logging.getLogger(__name__)
HEALTH_TTL_S = 30
SWEEP_EVERY_S = 60


class Worker:
    def __init__(
        self,
        settings: Settings,
        client: aioredis.Redis,
        registry: ModelRegistry,
        name: str | None = None,
        reclaim_at_start: bool = False,
    ) -> None:
        """``reclaim_at_start``: take over every pending entry at once, whoever held it, until none is left:
        right for the only consumer of a server (the embedded one), whose predecessor is known dead."""
        self.settings = settings
        self.redis = client
        self.registry = registry
        self.name = name or f"{socket.gethostname()}-{os.getpid()}"
        self.queue = JobQueue(client, QueueConfig.from_settings(settings), make_result_store(settings.result_store))
        self._infer_pool = ThreadPoolExecutor(1, thread_name_prefix="infer")  # one device, one stream of batches
        self._encode_pool = ThreadPoolExecutor(settings.encode_threads, thread_name_prefix="encode")
        self._batchers: dict[str, DynamicBatcher] = {}
        self._inflight: dict[str, WorkItem] = {}
        self._preparing = 0  # work items started that have not yet handed their latents to the batcher
        self._tasks: set[asyncio.Task[None]] = set()
        self._take_over = reclaim_at_start
        self._backlog: list[WorkItem] = []  # taken over at start-up (or read beyond the free slots), not yet started
        self._next_reclaim = 0.0  # monotonic time of the next look for stalled workers' entries
        self._stop: asyncio.Event | None = None

    def _batcher(self, model: LoadedModel) -> DynamicBatcher:
        ref = model.package.ref
        if ref not in self._batchers:

            def observe(size: int, seconds: float) -> None:
                M.BATCH_SIZE.labels(ref).observe(size)
                M.BATCH_FILL.labels(ref).observe(size / self.settings.batch_size)
                M.INFERENCE_SECONDS.labels(ref).observe(seconds)

            runner = model.runner(self.settings.io_binding)
            batcher = DynamicBatcher(
                runner,
                self.settings.batch_size,
                self.settings.batch_wait_ms / 1000,
                self._infer_pool,
                observe,
                more_coming=lambda: self._preparing > 0,
            )
            batcher.start()
            self._batchers[ref] = batcher
        return self._batchers[ref]

    async def run(self, stop: asyncio.Event) -> None:
        """Work until ``stop`` is set; then finish the items in flight and return."""
        self._stop = stop
        await self.queue.ensure_groups()
        if self._take_over:
            self._backlog = await self.queue.take_over_all(self.name)
            if self._backlog:
                M.REDELIVERIES.inc(len(self._backlog))
                log.warning("took over %d work items that the previous process left pending", len(self._backlog))
        heartbeat = asyncio.create_task(self._heartbeat(stop), name="worker-heartbeat")
        interactive = InteractiveServer(self.redis, self.registry, self._batcher, self.settings.batch_size)
        interactive_task = asyncio.create_task(interactive.run(stop), name="worker-interactive")
        log.info("worker %s started", self.name)
        try:
            backoff = 0.1
            while not stop.is_set():
                try:
                    await self._fill()
                    backoff = 0.1
                except aioredis.RedisError as exc:
                    log.warning("redis error while reading work (retrying in %.1f s): %s", backoff, exc)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
            if self._tasks:
                await asyncio.wait(self._tasks)
            await interactive_task
        finally:
            heartbeat.cancel()
            interactive_task.cancel()
            for batcher in self._batchers.values():
                await batcher.stop()
            self._infer_pool.shutdown(wait=False)
            self._encode_pool.shutdown(wait=False)
            await self.redis.delete(K.worker_health_key(self.name))
            log.info("worker %s stopped", self.name)

    async def _fill(self) -> None:
        """Start as many work items as there are free slots: reclaimed ones first, then new ones.

        With more than one slot, the last free slot is kept for interactive work, so a running bulk
        job never stops an interactive one from being picked up at once.
        """
        free = self.settings.worker_concurrency - len(self._inflight)
        if free <= 0:
            await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)
            return
        if self._backlog:
            items, self._backlog = self._backlog[:free], self._backlog[free:]
            for item in items:
                self._spawn(item)
            return
        items = await self._reclaim(free)
        if not items:
            keep_one = self.settings.worker_concurrency > 1 and free == 1
            items = await self.queue.read_work(self.name, free, block_ms=200 if keep_one else 500, include_bulk=not keep_one)
        for item in items[:free]:
            self._spawn(item)
        self._backlog += items[free:]  # a read over several shards can return more than asked for

    async def _reclaim(self, free: int) -> list[WorkItem]:
        """Stalled workers' entries, looked for at most every quarter of the visibility timeout (one
        XAUTOCLAIM per stream of every shard each time)."""
        now = time.monotonic()
        if now < self._next_reclaim:
            return []
        self._next_reclaim = now + min(1.0, self.settings.visibility_timeout_s / 4)
        items = await self.queue.reclaim(self.name, int(self.settings.visibility_timeout_s * 1000), free)
        if items:
            M.REDELIVERIES.inc(len(items))
            log.warning("reclaimed %d work items from stalled workers", len(items))
        return items

    def _spawn(self, item: WorkItem) -> None:
        self._inflight[item.entry_id] = item
        self._preparing += 1
        M.WORKER_INFLIGHT.set(len(self._inflight))
        task = asyncio.create_task(self._process(item))
        self._tasks.add(task)

        def done(t: asyncio.Task[None]) -> None:
            self._tasks.discard(t)
            self._inflight.pop(item.entry_id, None)
            M.WORKER_INFLIGHT.set(len(self._inflight))

        task.add_done_callback(done)

    async def _heartbeat(self, stop: asyncio.Event) -> None:
        """Write the health key, and keep this worker's claims fresh while it works."""
        period = min(HEALTH_TTL_S / 3, self.settings.visibility_timeout_s / 3)
        last_sweep = 0.0
        while not stop.is_set():
            try:
                await self.redis.set(K.worker_health_key(self.name), str(time.time()), ex=HEALTH_TTL_S)
                await self.queue.refresh_claims(self.name, [*self._inflight.values(), *self._backlog])
            except aioredis.RedisError as exc:
                log.warning("heartbeat failed: %s", exc)
            if time.monotonic() - last_sweep > SWEEP_EVERY_S:
                last_sweep = time.monotonic()
                removed = await self.queue.store.sweep(time.time())
                if removed:
                    log.info("removed the results of %d expired jobs", removed)
            await asyncio.sleep(period)

    async def _process(self, item: WorkItem) -> None:
        state = {"preparing": True}
        try:
            await self._compute_and_store(item, state)
        except aioredis.RedisError as exc:
            # Left pending: another pass (here or on another worker) will reclaim it.
            M.CHUNKS.labels(ChunkOutcome.REDIS_ERROR).inc()
            log.warning("work item %s of job %s left pending: %s", item.entry_id, item.job_id, exc)
        except ResultStoreFull as exc:
            M.CHUNKS.labels(ChunkOutcome.STORE_FULL).inc()
            M.JOBS_FINISHED.labels(JobStatus.FAILED.value).inc()
            log.error("job %s failed: %s", item.job_id, exc)
            await self.queue.fail_job(item, f"result store full: {exc.strerror}; no partial chunk was kept")
        except Exception as exc:
            M.CHUNKS.labels(ChunkOutcome.ERROR).inc()
            M.JOBS_FINISHED.labels(JobStatus.FAILED.value).inc()
            log.exception("work item %s of job %s failed", item.entry_id, item.job_id)
            await self.queue.fail_job(item, f"{type(exc).__name__}: {exc}")
        finally:
            if state["preparing"]:
                self._preparing -= 1

    def _stopping(self) -> bool:
        return self._stop is not None and self._stop.is_set()

    def _submitted(self, state: dict[str, bool]) -> None:
        if state["preparing"]:
            state["preparing"] = False
            self._preparing -= 1

    async def _compute_and_store(self, item: WorkItem, state: dict[str, bool]) -> None:
        try:
            job = await self.queue.get_job(item.job_id)
        except NotFound:
            await self.queue.skip(item)
            M.CHUNKS.labels(ChunkOutcome.SKIPPED).inc()
            return
        if job.status.stopped or job.expired():
            # a cancelled or failed job released its images already; an expired one releases them here
            await self.queue.skip(item, release_images=0 if job.status.stopped else item.images)
            M.CHUNKS.labels(ChunkOutcome.SKIPPED).inc()
            return
        await self.queue.mark_running(item.job_id)
        model = self.registry.get(job.model)
        if model.package.sha256 != job.sha256:
            raise RuntimeError(
                f"job wants {job.model} with sha256 {job.sha256[:12]}…, this worker has {model.package.sha256[:12]}…"
            )
        spec = RenderSpec(
            job.seed, job.truncation, job.fmt, job.quality, self.settings.png_compress_level, job.crowd, job.count, job.labels
        )
        batcher = self._batcher(model)
        if item.sequential:
            self._submitted(state)  # a unique job decodes batch after batch: nobody should wait for it
            novel = model.training_index() if job.novel else None
            if job.novel and novel is None:
                raise RuntimeError(f"job asks for novel images but {model.package.ref} on this worker has no training index")
            work = UniqueJob(item, job, model, spec, novel, stopping=self._stopping)
            await run_unique_job(self.queue, work, batcher.submit, self._encode_pool, self.settings.batch_size)
            M.IMAGES.labels(model.package.ref, spec.fmt).inc(item.images)
            return
        indices = np.arange(item.start, item.stop, dtype=np.int64)
        rows = job_inputs(model, spec, indices)
        pending = batcher.submit(rows, item.priority)
        self._submitted(state)  # the decode rows are in the batcher's queue now
        images = await pending
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        chunk = await loop.run_in_executor(self._encode_pool, encode_chunk, model, spec, indices, rows, images)
        M.ENCODE_SECONDS.labels(spec.fmt).observe(time.perf_counter() - started)
        done, finished = await self.queue.complete_chunk(
            item, len(indices), chunk.tar, chunk.offsets, job.expires_at, chunk.label_counts
        )
        if done < 0:
            M.CHUNKS.labels(ChunkOutcome.SKIPPED).inc()
            return
        M.CHUNKS.labels(ChunkOutcome.DONE).inc()
        M.IMAGES.labels(model.package.ref, spec.fmt).inc(len(indices))
        M.RESULT_BYTES.inc(len(chunk.tar))
        if finished:
            M.JOBS_FINISHED.labels(JobStatus.SUCCEEDED.value).inc()
            M.JOB_SECONDS.observe(time.time() - job.created_at)
