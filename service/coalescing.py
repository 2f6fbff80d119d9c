"""Coalescing: calls that arrive in the same turn of the event loop, for the same key, served by one call.

32 clients' single images reach the api in bursts. Served one by one, each pays a fixed cost that does
not depend on its size (numpy's per-call overhead, a Redis round trip, a message to a worker). A
``Coalescer`` queues the items of a turn by key and hands each key's items to ``run`` together, in
groups of at most ``limit`` rows; a group leaves as soon as it is full (so the next stage starts on the
first rows of a burst while the rest are still being read), the rest at the end of the turn. ``run``
returns the rows of the group's items, in order; each caller gets its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

Key = TypeVar("Key", bound=Hashable)
Item = TypeVar("Item")


@dataclass
class _Queued(Generic[Item]):
    item: Item
    rows: int
    future: asyncio.Future[np.ndarray]


class Coalescer(Generic[Key, Item]):
    def __init__(self, run: Callable[[Key, list[Item]], Awaitable[np.ndarray]], limit: int) -> None:
        self.run = run
        self.limit = max(1, limit)
        self._pending: dict[Key, list[_Queued[Item]]] = {}
        self._flush_scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, key: Key, item: Item, rows: int) -> np.ndarray:
        """The ``rows`` rows of ``run``'s output that are ``item``'s."""
        loop = asyncio.get_running_loop()
        queued = _Queued(item, rows, loop.create_future())
        group = self._pending.setdefault(key, [])
        if group and sum(q.rows for q in group) + rows > self.limit:
            self._start(key, self._pending.pop(key))  # full: on its way now, the next rows start a group
            group = self._pending.setdefault(key, [])
        group.append(queued)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush)  # after the calls already ready to run have queued theirs
        return await queued.future

    def _flush(self) -> None:
        self._flush_scheduled = False
        pending, self._pending = self._pending, {}
        for key, group in pending.items():
            self._start(key, group)

    def _start(self, key: Key, group: list[_Queued[Item]]) -> None:
        task = asyncio.create_task(self._answer(key, group))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, key: Key, group: list[_Queued[Item]]) -> None:
        try:
            out = await self.run(key, [q.item for q in group])
        except Exception as exc:  # every caller of the group gets the error
            for queued in group:
                if not queued.future.done():
                    queued.future.set_exception(exc)
            return
        offset = 0
        for queued in group:
            if not queued.future.done():  # a caller that went away has cancelled its own
                queued.future.set_result(out[offset : offset + queued.rows])
            offset += queued.rows
