"""The interactive channel: single images and interpolations decoded by the workers, with no polling.

The api pushes a request (its latents and a deadline) on one list that every worker blocks on (BLPOP),
then blocks on the request's own reply list. Single images that reach the api together travel as one
request of several rows. A worker pops the request, puts its latents in its dynamic
batcher ahead of bulk work, and pushes the uint8 images to the reply list (the replies of one batch in one round trip). The api wakes the moment
they arrive. A request is never acknowledged: when the worker that popped it dies, the reply never comes,
and the api, after ``timeout_s``, asks once more (another worker takes it) and then answers 503
``unavailable`` with Retry-After. Workers drop requests whose deadline has passed: nobody waits for them.

A message is one JSON header line followed by the raw array bytes (float32 latents, or uint8 images).
"""

from __future__ import annotations

import json
import logging
import math
import secrets
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import redis.asyncio as aioredis

from service.coalescing import Coalescer
from service.queue import keys as K
from synthgen.core.errors import Unavailable

log = logging.getLogger(__name__)
REQUEST_LIST_TTL_S = 60  # a request list nobody pops (no worker at all) goes away by itself
REPLY_TTL_S = 30  # a reply nobody collects (the api gave up) goes away by itself
ATTEMPTS = 2  # the first try, and one more after a worker died holding the request


@dataclass(frozen=True)
class InteractiveRequest:
    id: str
    model: str  # name@version
    sha256: str
    z: np.ndarray  # float32 [N, D]
    deadline: float  # unix time after which nobody waits for the reply

    def encode(self) -> bytes:
        header = {
            "id": self.id,
            "model": self.model,
            "sha256": self.sha256,
            "shape": list(self.z.shape),
            "deadline": self.deadline,
        }
        return json.dumps(header).encode() + b"\n" + np.ascontiguousarray(self.z, dtype=np.float32).tobytes()

    @classmethod
    def decode(cls, message: bytes) -> InteractiveRequest:
        head, _, body = message.partition(b"\n")
        header = json.loads(head)
        z = np.frombuffer(body, dtype=np.float32).reshape(header["shape"])
        return cls(header["id"], header["model"], header["sha256"], z, float(header["deadline"]))


def encode_reply(images: np.ndarray | None, error: str = "") -> bytes:
    if images is None:
        return json.dumps({"error": error}).encode() + b"\n"
    return json.dumps({"shape": list(images.shape)}).encode() + b"\n" + np.ascontiguousarray(images, dtype=np.uint8).tobytes()


def decode_reply(message: bytes) -> np.ndarray:
    """The images of a reply; a worker's error becomes Unavailable (another worker may serve the model)."""
    head, _, body = message.partition(b"\n")
    header = json.loads(head)
    if "error" in header:
        raise Unavailable(f"a worker could not decode the request: {header['error']}", 5)
    return np.frombuffer(body, dtype=np.uint8).reshape(header["shape"])


class InteractiveClient:
    """The api side: ``await decode(model_ref, sha256, z)`` returns the images or raises Unavailable.

    Calls for one model that arrive in the same turn of the event loop travel as one message of at most
    ``max_rows`` rows and come back as one reply (``service/coalescing.py``): a Redis round trip, a request
    and a reply per group instead of per image, on the api and on the worker alike.
    """

    def __init__(self, client: aioredis.Redis, timeout_s: float, max_rows: int = 64) -> None:
        self.redis = client
        self.timeout_s = timeout_s
        self._coalescer: Coalescer[tuple[str, str], np.ndarray] = Coalescer(self._decode_group, max_rows)

    async def decode(self, model: str, sha256: str, z: np.ndarray) -> np.ndarray:
        return await self._coalescer.submit((model, sha256), z, len(z))

    async def _decode_group(self, key: tuple[str, str], rows: list[np.ndarray]) -> np.ndarray:
        return await self._decode_rows(*key, rows[0] if len(rows) == 1 else np.concatenate(rows))

    async def _ask(self, model: str, sha256: str, z: np.ndarray) -> bytes | None:
        request = InteractiveRequest(secrets.token_urlsafe(12), model, sha256, z, time.time() + self.timeout_s)
        async with self.redis.pipeline(transaction=False) as pipe:  # one key: one slot on a cluster too
            pipe.rpush(K.INTERACTIVE_REQUESTS_KEY, request.encode())
            pipe.expire(K.INTERACTIVE_REQUESTS_KEY, REQUEST_LIST_TTL_S)
            await pipe.execute()
        reply: Any = await self.redis.blpop([K.interactive_reply_key(request.id)], timeout=self.timeout_s)
        return None if reply is None else bytes(reply[1])

    async def _decode_rows(self, model: str, sha256: str, z: np.ndarray) -> np.ndarray:
        for attempt in range(ATTEMPTS):
            reply = await self._ask(model, sha256, z)
            if reply is not None:
                return decode_reply(reply)
            log.warning("no worker answered an interactive request within %.1f s (attempt %d)", self.timeout_s, attempt + 1)
        raise Unavailable(
            f"no worker answered within {ATTEMPTS} x {self.timeout_s:g} s: the workers are down or overloaded; retry shortly",
            max(1, math.ceil(self.timeout_s)),
            {"timeout_s": self.timeout_s, "attempts": ATTEMPTS},
        )
