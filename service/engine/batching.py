"""Dynamic batching: merge latents from many chunks into device batches of at most B, waiting at most W.

Every request owns a future that the batch loop fulfils with exactly its own rows. Requests larger
than B are split. If a merged batch fails, each request in it is retried alone, so one bad request
fails by itself and never takes the others down.

Interactive requests go ahead of bulk ones: a batch is filled from the interactive queue first, so
interactive work waits at most for the batch already running on the device.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np

from synthgen.core.jobs import Priority

log = logging.getLogger(__name__)

InferFn = Callable[[np.ndarray], np.ndarray]
BatchObserver = Callable[[int, float], None]  # (batch size, seconds)
MoreComing = Callable[[], bool]  # whether any caller is about to submit


PRIORITIES = tuple(Priority)  # the order in which queued requests are taken: interactive first


@dataclass
class _Request:
    z: np.ndarray
    priority: str
    future: asyncio.Future[np.ndarray] = field(repr=False)


class DynamicBatcher:
    """Start with ``start()``, stop with ``await stop()``; ``await submit(z)`` from any task."""

    def __init__(
        self,
        infer: InferFn,
        max_batch: int,
        max_wait_s: float,
        executor: Executor | None = None,
        observe: BatchObserver | None = None,
        more_coming: MoreComing | None = None,
    ) -> None:
        """``more_coming``, when given, says whether another request is on its way: when none is, a
        batch leaves at once instead of waiting out ``max_wait_s`` for requests that cannot come."""
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if max_wait_s < 0:
            raise ValueError(f"max_wait_s must be >= 0, got {max_wait_s}")
        self._infer = infer
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self._executor = executor
        self._observe = observe
        self._more_coming = more_coming
        self._queues: dict[str, deque[_Request]] = {p: deque() for p in PRIORITIES}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="dynamic-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for queue in self._queues.values():
            while queue:
                request = queue.popleft()
                if not request.future.done():
                    request.future.set_exception(RuntimeError("batcher stopped"))

    def submit(self, z: np.ndarray, priority: str = Priority.BULK) -> Awaitable[np.ndarray]:
        """Queue z [N, D] at once (so the caller can tell that it has submitted), and return what to await:
        the outputs in the same order. N may exceed max_batch."""
        if self._task is None:
            raise RuntimeError("DynamicBatcher.submit called before start()")
        if priority not in self._queues:
            raise ValueError(f"priority must be one of {[p.value for p in PRIORITIES]}, got {priority!r}")
        loop = asyncio.get_running_loop()
        futures = []
        for start in range(0, len(z), self.max_batch):
            future: asyncio.Future[np.ndarray] = loop.create_future()
            self._queues[priority].append(_Request(z[start : start + self.max_batch], priority, future))
            futures.append(future)
        self._wake.set()
        return self._join(futures)

    @staticmethod
    async def _join(futures: list[asyncio.Future[np.ndarray]]) -> np.ndarray:
        parts = await asyncio.gather(*futures)
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _pop(self) -> _Request | None:
        for priority in PRIORITIES:
            if self._queues[priority]:
                return self._queues[priority].popleft()
        return None

    async def _next(self, timeout: float | None) -> _Request | None:
        """The next request, interactive first; waits up to ``timeout`` seconds (None: forever)."""
        request = self._pop()
        while request is None:
            self._wake.clear()
            if timeout is not None and timeout <= 0:
                return None
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except TimeoutError:
                return self._pop()
            request = self._pop()
        return request

    async def _collect(self) -> list[_Request]:
        """Gather requests until the batch is full or the wait, timed from the first request, is over."""
        first = await self._next(None)
        assert first is not None
        batch, size = [first], len(first.z)
        deadline = time.monotonic() + self.max_wait_s
        while size < self.max_batch:
            if self._more_coming is not None and not self._more_coming() and not any(self._queues.values()):
                break  # nobody else is about to submit: waiting would only add latency
            request = await self._next(deadline - time.monotonic())  # the remaining wait, recomputed every pass
            if request is None:
                break
            if size + len(request.z) > self.max_batch:
                self._queues[request.priority].appendleft(request)  # first in line for the next batch
                break
            batch.append(request)
            size += len(request.z)
        return batch

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [r for r in await self._collect() if not r.future.cancelled()]
            if not batch:
                continue
            z = np.concatenate([r.z for r in batch]) if len(batch) > 1 else batch[0].z
            started = time.perf_counter()
            try:
                out = await loop.run_in_executor(self._executor, self._infer, z)
            except Exception:
                log.exception("batch of %d failed; retrying its %d requests one by one", len(z), len(batch))
                await self._run_alone(batch)
                continue
            if self._observe is not None:
                self._observe(len(z), time.perf_counter() - started)
            offset = 0
            for request in batch:
                n = len(request.z)
                if not request.future.done():
                    request.future.set_result(out[offset : offset + n])
                offset += n

    async def _run_alone(self, batch: list[_Request]) -> None:
        loop = asyncio.get_running_loop()
        for request in batch:
            try:
                out = await loop.run_in_executor(self._executor, self._infer, request.z)
            except Exception as exc:
                if not request.future.done():
                    request.future.set_exception(exc)
            else:
                if not request.future.done():
                    request.future.set_result(out)
