"""The asynchronous client."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any, Self

import httpx

from synthgen.client.common import (
    _Base,
    _crowd_fields,
    _image_request,
    _interpolate_request,
    _job_body,
    _job_path,
    _ResultCursor,
    _StreamTruncated,
)
from synthgen.client.constants import TAR_END, Destination
from synthgen.client.errors import SynthgenTimeoutError
from synthgen.client.models import Job, ModelInfo, Sample
from synthgen.core.files import atomic_file
from synthgen.core.images import DEFAULT_FORMAT, DEFAULT_QUALITY

log = logging.getLogger(__name__)


class AsyncSynthgenClient(_Base):
    """The same API for asyncio. Use it as an async context manager, or call ``aclose()``."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        timeout: float = 30.0,
        max_retries: int = 3,
        *,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        max_retry_after: float = 300.0,
        stream_read_timeout: float | None = 600.0,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        super().__init__(base_url, api_key, timeout, max_retries, backoff_base, backoff_max, max_retry_after, stream_read_timeout)
        self._sleep = sleep
        self._http = httpx.AsyncClient(base_url=self.base_url, headers=self._headers, timeout=self._timeout, transport=transport)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(
        self, method: str, path: str, *, idempotent: bool = True, stream: bool = False,
        params: Mapping[str, Any] | None = None, json: Any = None,
    ) -> httpx.Response:  # fmt: skip
        timeout = self._stream_timeout if stream else self._timeout
        attempt = 0
        while True:
            attempt += 1
            request = self._http.build_request(method, path, params=params, json=json, timeout=timeout)
            try:
                response = await self._http.send(request, stream=stream)
            except httpx.TransportError as exc:
                delay = self._policy.after_error(attempt, exc, idempotent)
            else:
                if response.is_success:
                    return response
                await response.aread()
                await response.aclose()
                delay = self._policy.after_status(attempt, response, idempotent)
            await self._sleep(delay)

    async def models(self) -> list[ModelInfo]:
        return [ModelInfo.from_json(m) for m in (await self._send("GET", "/v1/models")).json()["models"]]

    async def create_job(
        self, count: int | None = None, seed: int | None = None, model: str | None = None, truncation: float | None = None,
        format: str = DEFAULT_FORMAT, quality: int = DEFAULT_QUALITY, priority: str | None = None, unique: bool = False,
        collection: str | None = None, novel: bool = False, *, attributes: Mapping[str, str] | None = None,
        distribution: Mapping[str, Mapping[str, float]] | None = None, identities: int | None = None,
        per_identity: int | None = None, variation: float | None = None, labels: bool = True,
    ) -> Job:  # fmt: skip
        """A job of ``count`` images; ``attributes``, ``distribution`` and ``identities`` x ``per_identity``
        (with ``variation``) say who is in it (``count`` may then be omitted), as API.md describes. ``labels=False``:
        the model's classifier does not label the images (no ``predicted``), for raw bulk throughput."""
        crowd = _crowd_fields(attributes, distribution, identities, per_identity, variation)
        body = _job_body(count, seed, model, truncation, format, quality, priority, unique, collection, novel, crowd, labels)
        return Job.from_json((await self._send("POST", "/v1/jobs", json=body, idempotent=False)).json())

    async def job(self, job_id: str) -> Job:
        return Job.from_json((await self._send("GET", _job_path(job_id))).json())

    async def card(self, job_id: str) -> str:
        """The job's dataset card (markdown): model, request, counts, requested vs predicted attributes."""
        return (await self._send("GET", _job_path(job_id, "/card"))).text

    async def cancel(self, job_id: str) -> Job:
        return Job.from_json((await self._send("DELETE", _job_path(job_id))).json())

    async def wait(self, job_id: str, poll_interval: float = 0.5, timeout: float | None = None) -> Job:
        """Poll until the job is finished (succeeded, failed, cancelled or expired), and return it."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not (job := await self.job(job_id)).finished:
            if deadline is not None and time.monotonic() >= deadline:
                raise SynthgenTimeoutError(f"job {job_id} is still {job.status} ({job.done}/{job.count}) after {timeout} s")
            await self._sleep(poll_interval)
        return job

    @asynccontextmanager
    async def _stream(self, path: str, params: Mapping[str, Any]) -> AsyncIterator[httpx.Response]:
        response = await self._send("GET", path, stream=True, params=params)
        try:
            yield response
        finally:
            await response.aclose()

    async def iter_samples(self, job_id: str, start: int = 0, stop: int | None = None) -> AsyncIterator[Sample]:
        """The samples [start, stop) of a job's result as they complete, resuming after dropped connections."""
        cursor = _ResultCursor(job_id, start, stop)
        while not cursor.complete:
            try:
                async with self._stream(cursor.path, cursor.params()) as response:
                    async for data in response.aiter_bytes():
                        for sample in cursor.feed(data):
                            yield sample
                cursor.check_ended()
            except (httpx.TransportError, _StreamTruncated) as exc:
                await self._sleep(cursor.dropped(self._policy, exc))
                if cursor.stop is None:
                    cursor.stop = (await self.job(job_id)).count

    async def iter_result(self, job_id: str, start: int = 0, stop: int | None = None) -> AsyncIterator[bytes]:
        """The result tar of samples [start, stop), in pieces that end on sample boundaries."""
        async for sample in self.iter_samples(job_id, start, stop):
            yield sample.raw
        yield TAR_END

    async def download(self, job_id: str, dest: Destination, start: int = 0, stop: int | None = None) -> int:
        """Write the result tar to a path (atomically) or a binary file; return the number of bytes."""
        if isinstance(dest, str | os.PathLike):
            with atomic_file(dest) as f:
                return await self.download(job_id, f, start, stop)
        written = 0
        async for data in self.iter_result(job_id, start, stop):
            dest.write(data)
            written += len(data)
        return written

    async def job_image(self, job_id: str, index: int) -> bytes:
        """One image of a job (409 ConflictError, with retry_after, while it is not generated yet)."""
        return (await self._send("GET", _job_path(job_id, f"/images/{index}"))).content

    async def image(
        self, seed: int, index: int = 0, model: str | None = None, truncation: float | None = None,
        fmt: str = DEFAULT_FORMAT, quality: int | None = None,
    ) -> bytes:  # fmt: skip
        path, params = _image_request(seed, index, model, truncation, fmt, quality)
        return (await self._send("GET", path, params=params)).content

    async def interpolate(
        self, from_seed: int, to_seed: int, steps: int = 9, method: str = "slerp", model: str | None = None,
        fmt: str = DEFAULT_FORMAT, layout: str | None = None, **options: Any,
    ) -> bytes:  # fmt: skip
        """A tar of the images from one seed's latent to another's, or one strip image with layout="strip".
        ``options`` adds body fields the server knows (from_index, to_index, truncation, quality)."""
        body, params = _interpolate_request(from_seed, to_seed, steps, method, model, fmt, layout, options)
        return (await self._send("POST", "/v1/interpolate", json=body, params=params)).content
