"""The worker side of the interactive channel (``service/queue/interactive.py``).

It blocks on the request list, takes what is queued there (up to one batch), and puts each request's
latents in the worker's dynamic batcher as interactive work, so they run in the next batch on the
device, ahead of bulk work. Each reply goes to the request's own list the moment its batch is done.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import redis.asyncio as aioredis

from service.engine.batching import DynamicBatcher
from service.engine.registry import LoadedModel, ModelRegistry
from service.queue import keys as K
from service.queue.interactive import REPLY_TTL_S, InteractiveRequest, encode_reply
from service.telemetry import instruments as M
from synthgen.core.jobs import Priority

log = logging.getLogger(__name__)
BLOCK_S = 1  # how long one BLPOP waits, so that a stop is noticed within a second


class InteractiveServer:
    def __init__(
        self, client: aioredis.Redis, registry: ModelRegistry, batcher_for: Callable[[LoadedModel], DynamicBatcher], grab: int
    ) -> None:
        """``grab``: the most requests taken at once (a batch's worth), so idle workers get the rest."""
        self.redis = client
        self.registry = registry
        self.batcher_for = batcher_for
        self.grab = max(1, grab)
        self._tasks: set[asyncio.Task[None]] = set()
        self._held = 0  # requests taken and not yet answered

    async def run(self, stop: asyncio.Event) -> None:
        backoff = 0.1
        while not stop.is_set():
            if self._held >= 4 * self.grab:  # enough in hand: let other workers take the next ones
                await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)
                continue
            try:
                messages = await self._take()
                backoff = 0.1
            except aioredis.RedisError as exc:
                log.warning("redis error on the interactive channel (retrying in %.1f s): %s", backoff, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            if messages:
                self._held += len(messages)
                task = asyncio.create_task(self._serve(messages))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        if self._tasks:
            await asyncio.wait(self._tasks)

    async def _take(self) -> list[bytes]:
        popped: Any = await self.redis.blpop([K.INTERACTIVE_REQUESTS_KEY], timeout=BLOCK_S)
        if popped is None:
            return []
        messages = [bytes(popped[1])]
        if self.grab > 1:  # whatever queued meanwhile joins the same batch
            more: Any = await self.redis.lpop(K.INTERACTIVE_REQUESTS_KEY, self.grab - 1)
            messages += [bytes(m) for m in more or []]
        return messages

    async def _serve(self, messages: list[bytes]) -> None:
        """Decode the requests taken together (they join the same batches) and deliver their replies in one
        round trip."""
        try:
            await self._answer(messages)
        finally:
            self._held -= len(messages)

    async def _answer(self, messages: list[bytes]) -> None:
        requests = [r for r in map(self._parse, messages) if r is not None]
        if not requests:
            return
        decoded = await asyncio.gather(*(self._decode(r) for r in requests), return_exceptions=True)
        outcomes: list[str] = []
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for request, result in zip(requests, decoded, strict=True):
                    if isinstance(result, BaseException):  # the one caller gets the error; the worker goes on
                        log.warning("interactive request %s failed: %s", request.id, result)
                        reply, outcome = encode_reply(None, f"{type(result).__name__}: {result}"), "failed"
                    else:
                        reply, outcome = encode_reply(result), "done"
                    pipe.rpush(K.interactive_reply_key(request.id), reply)
                    pipe.expire(K.interactive_reply_key(request.id), REPLY_TTL_S)
                    outcomes.append(outcome)
                await pipe.execute()
        except aioredis.RedisError as exc:
            log.warning("could not deliver %d interactive replies: %s", len(requests), exc)
            outcomes = ["undelivered"] * len(requests)
        for outcome in outcomes:
            M.INTERACTIVE_REQUESTS.labels(outcome).inc()

    @staticmethod
    def _parse(message: bytes) -> InteractiveRequest | None:
        """The request, or None for a malformed one or one whose caller has given up on it already."""
        try:
            request = InteractiveRequest.decode(message)
        except (ValueError, KeyError) as exc:
            M.INTERACTIVE_REQUESTS.labels("malformed").inc()
            log.warning("dropped a malformed interactive request: %s", exc)
            return None
        if time.time() > request.deadline:
            M.INTERACTIVE_REQUESTS.labels("expired").inc()
            return None
        return request

    async def _decode(self, request: InteractiveRequest) -> np.ndarray:
        model = self.registry.get(request.model)
        if model.package.sha256 != request.sha256:
            raise RuntimeError(
                f"request wants {request.model} with sha256 {request.sha256[:12]}…, this worker has {model.package.sha256[:12]}…"
            )
        return await self.batcher_for(model).submit(request.z, Priority.INTERACTIVE)
