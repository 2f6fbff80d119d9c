"""What a running process holds: the Redis client (embedded server if no URL), models, queue, worker."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import redis.asyncio as aioredis

from service.api.keys import KeyRing
from service.embedded_redis import EmbeddedRedis, PersistentRedis
from service.engine.batching import DynamicBatcher
from service.engine.registry import LoadedModel, ModelRegistry, build_registry
from service.engine.single_images import SingleImages
from service.queue.connection import connect
from service.queue.eviction import check_eviction_policy
from service.queue.interactive import InteractiveClient
from service.queue.jobs import QueueConfig
from service.queue.result_store import make_result_store
from service.queue.streams import JobQueue
from service.settings import Settings
from service.telemetry.gpu import register_gpu_metrics
from service.worker.worker import Worker
from synthgen.core.jobs import Priority

log = logging.getLogger(__name__)


def load_keyring(settings: Settings) -> KeyRing:
    """The API keys; raises ValueError when they are unreadable, too short, or required and absent."""
    keyring = KeyRing.load(settings.api_keys, settings.api_keys_file, settings.read_only_api_keys)
    if settings.require_api_keys and not keyring.enabled:
        raise ValueError("SYNTHGEN_REQUIRE_API_KEYS is on but no key is set (SYNTHGEN_API_KEYS or SYNTHGEN_API_KEYS_FILE)")
    return keyring


def interactive_on_workers(settings: Settings, with_worker: bool) -> bool:
    """Where single images and interpolations are decoded: ``auto`` sends them to the workers unless this
    process runs its own worker (``serve --role all``), where decoding in place saves the Redis round trip."""
    if settings.interactive_decode == "auto":
        return not with_worker
    return settings.interactive_decode == "workers"


@dataclass
class Runtime:
    settings: Settings
    redis: aioredis.Redis
    registry: ModelRegistry
    queue: JobQueue
    keyring: KeyRing = field(default_factory=lambda: KeyRing(()))
    embedded: EmbeddedRedis | None = None
    worker_task: asyncio.Task[None] | None = None
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    # single-image requests are batched too: concurrent clients share decoder runs
    _image_batchers: dict[str, DynamicBatcher] = field(default_factory=dict)
    _image_pool: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="api-infer"))

    # set when single images and interpolations go to the workers (interactive_decode), else decoded here
    interactive: InteractiveClient | None = None

    @cached_property
    def _single_images(self) -> SingleImages:
        return SingleImages(self.decode_latents, self.settings.interactive_rows)

    async def decode_images(self, model: LoadedModel, seed: int, indices: np.ndarray, truncation: float | None) -> np.ndarray:
        """Decode a few images, on the workers or in this process, batched with other concurrent requests (their
        decode rows computed together too: ``service/engine/single_images.py``)."""
        return await self._single_images.images(model, seed, indices, truncation)

    async def decode_latents(self, model: LoadedModel, z: np.ndarray) -> np.ndarray:
        """Decode rows (``LoadedModel.inputs``: z, or [z | y] for a conditional model) -> images."""
        if self.interactive is not None:
            return await self.interactive.decode(model.package.ref, model.package.sha256, z)
        ref = model.package.ref
        if ref not in self._image_batchers:
            # No wait: a request never waits for others that may not come; it joins whatever
            # queued while the decoder was busy with the previous batch.
            batcher = DynamicBatcher(model.decode, self.settings.batch_size, 0.0, self._image_pool)
            batcher.start()
            self._image_batchers[ref] = batcher
        return await self._image_batchers[ref].submit(z, Priority.INTERACTIVE)

    @classmethod
    async def start(
        cls, settings: Settings, with_worker: bool, registry: ModelRegistry | None = None, embedded: EmbeddedRedis | None = None
    ) -> Runtime:
        """Load and verify the models first: a bad package stops the process before anything else starts.

        With no ``REDIS_URL`` the process runs on an embedded Redis: ``embedded`` when the caller started
        it already, else one started here on the settings' data folder. Either way it is stopped by ``close``.
        """
        if registry is None:
            registry = await asyncio.to_thread(build_registry, settings)
        keyring = load_keyring(settings)
        url = settings.redis_url
        if not url and embedded is None:
            embedded = PersistentRedis(settings.data_dir, settings.embedded_appendfsync)
            await asyncio.to_thread(embedded.start)
        if embedded is not None:
            url = embedded.url
        client = connect(url, settings.redis_cluster and embedded is None)
        queue = JobQueue(client, QueueConfig.from_settings(settings), make_result_store(settings.result_store))
        runtime = cls(settings, client, registry, queue, keyring, embedded)
        if interactive_on_workers(settings, with_worker):
            runtime.interactive = InteractiveClient(client, settings.interactive_timeout_s, settings.interactive_rows)
        try:
            await check_eviction_policy(client, settings.require_noeviction)
            await queue.ensure_groups()
        except BaseException:
            await runtime.close()
            raise
        register_gpu_metrics()
        if with_worker:
            # On its own embedded server this process is the only consumer: whatever is pending belongs to
            # the process that ran before it (killed or stopped), so it is taken over at once.
            worker = Worker(settings, client, registry, reclaim_at_start=embedded is not None)
            runtime.worker_task = asyncio.create_task(worker.run(runtime._stop), name="worker")
        # What is loaded by now (models, the app, the clients) lives as long as the process: out of every garbage
        # collection, whose full passes over it otherwise stall requests now and then (the latency tail)
        gc.freeze()
        return runtime

    async def wait_worker(self) -> None:
        if self.worker_task is not None:
            await self.worker_task

    def request_stop(self) -> None:
        self._stop.set()

    async def close(self) -> None:
        self._stop.set()
        for batcher in self._image_batchers.values():
            await batcher.stop()
        self._image_pool.shutdown(wait=False)
        if self.worker_task is not None:
            try:  # in-flight chunks finish; past the drain timeout they stay pending (handed back) instead
                await asyncio.wait_for(asyncio.shield(self.worker_task), timeout=self.settings.drain_timeout_s)
            except TimeoutError:
                log.warning("work still in flight after %.0f s: handed back to the queue", self.settings.drain_timeout_s)
                self.worker_task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self.worker_task
            except Exception:
                log.exception("worker stopped with an error")
        await self.redis.aclose()
        if self.embedded is not None:
            await asyncio.to_thread(self.embedded.stop)
