"""The synchronous client."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping
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


class SynthgenClient(_Base):
    """A blocking client. Use it as a context manager, or call ``close()``."""

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
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(base_url, api_key, timeout, max_retries, backoff_base, backoff_max, max_retry_after, stream_read_timeout)
        self._sleep = sleep
        self._http = httpx.Client(base_url=self.base_url, headers=self._headers, timeout=self._timeout, transport=transport)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(
        self, method: str, path: str, *, idempotent: bool = True, stream: bool = False,
        params: Mapping[str, Any] | None = None, json: Any = None,
    ) -> httpx.Response:  # fmt: skip
        timeout = self._stream_timeout if stream else self._timeout
        attempt = 0
        while True:
            attempt += 1
            request = self._http.build_request(method, path, params=params, json=json, timeout=timeout)
            try:
                response = self._http.send(request, stream=stream)
            except httpx.TransportError as exc:
                delay = self._policy.after_error(attempt, exc, idempotent)
            else:
                if response.is_success:
                    return response
                response.read()
                response.close()
                delay = self._policy.after_status(attempt, response, idempotent)
            self._sleep(delay)

    def models(self) -> list[ModelInfo]:
        return [ModelInfo.from_json(m) for m in self._send("GET", "/v1/models").json()["models"]]

    def create_job(
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
        return Job.from_json(self._send("POST", "/v1/jobs", json=body, idempotent=False).json())

    def job(self, job_id: str) -> Job:
        return Job.from_json(self._send("GET", _job_path(job_id)).json())

    def card(self, job_id: str) -> str:
        """The job's dataset card (markdown): model, request, counts, requested vs predicted attributes."""
        return self._send("GET", _job_path(job_id, "/card")).text

    def cancel(self, job_id: str) -> Job:
        return Job.from_json(self._send("DELETE", _job_path(job_id)).json())

    def wait(self, job_id: str, poll_interval: float = 0.5, timeout: float | None = None) -> Job:
        """Poll until the job is finished (succeeded, failed, cancelled or expired), and return it."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not (job := self.job(job_id)).finished:
            if deadline is not None and time.monotonic() >= deadline:
                raise SynthgenTimeoutError(f"job {job_id} is still {job.status} ({job.done}/{job.count}) after {timeout} s")
            self._sleep(poll_interval)
        return job

    def iter_samples(self, job_id: str, start: int = 0, stop: int | None = None) -> Iterator[Sample]:
        """The samples [start, stop) of a job's result as they complete, resuming after dropped connections."""
        cursor = _ResultCursor(job_id, start, stop)
        while not cursor.complete:
            try:
                response = self._send("GET", cursor.path, stream=True, params=cursor.params())
                try:
                    for data in response.iter_bytes():
                        yield from cursor.feed(data)
                finally:
                    response.close()
                cursor.check_ended()
            except (httpx.TransportError, _StreamTruncated) as exc:
                self._sleep(cursor.dropped(self._policy, exc))
                if cursor.stop is None:
                    cursor.stop = self.job(job_id).count

    def iter_result(self, job_id: str, start: int = 0, stop: int | None = None) -> Iterator[bytes]:
        """The result tar of samples [start, stop), in pieces that end on sample boundaries."""
        for sample in self.iter_samples(job_id, start, stop):
            yield sample.raw
        yield TAR_END

    def download(self, job_id: str, dest: Destination, start: int = 0, stop: int | None = None) -> int:
        """Write the result tar to a path (atomically) or a binary file; return the number of bytes."""
        if isinstance(dest, str | os.PathLike):
            with atomic_file(dest) as f:
                return self.download(job_id, f, start, stop)
        written = 0
        for data in self.iter_result(job_id, start, stop):
            dest.write(data)
            written += len(data)
        return written

    def job_image(self, job_id: str, index: int) -> bytes:
        """One image of a job (409 ConflictError, with retry_after, while it is not generated yet)."""
        return self._send("GET", _job_path(job_id, f"/images/{index}")).content

    def image(
        self, seed: int, index: int = 0, model: str | None = None, truncation: float | None = None,
        fmt: str = DEFAULT_FORMAT, quality: int | None = None,
    ) -> bytes:  # fmt: skip
        path, params = _image_request(seed, index, model, truncation, fmt, quality)
        return self._send("GET", path, params=params).content

    def interpolate(
        self, from_seed: int, to_seed: int, steps: int = 9, method: str = "slerp", model: str | None = None,
        fmt: str = DEFAULT_FORMAT, layout: str | None = None, **options: Any,
    ) -> bytes:  # fmt: skip
        """A tar of the images from one seed's latent to another's, or one strip image with layout="strip".
        ``options`` adds body fields the server knows (from_index, to_index, truncation, quality)."""
        body, params = _interpolate_request(from_seed, to_seed, steps, method, model, fmt, layout, options)
        return self._send("POST", "/v1/interpolate", json=body, params=params).content
