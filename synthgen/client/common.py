"""What the sync and async clients share: request building, the retry policy, the result cursor."""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import httpx

from synthgen import __version__
from synthgen.client.errors import SynthgenConnectionError, error_from_response
from synthgen.client.models import Sample
from synthgen.client.tarstream import TarSampleReader
from synthgen.core.images import EXTENSIONS

log = logging.getLogger(__name__)


def _job_path(job_id: str, suffix: str = "") -> str:
    return f"/v1/jobs/{quote(job_id, safe='')}{suffix}"


def _drop_none(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def _crowd_fields(
    attributes: Mapping[str, str] | None, distribution: Mapping[str, Mapping[str, float]] | None,
    identities: int | None, per_identity: int | None, variation: float | None,
) -> dict[str, Any]:  # fmt: skip
    """Who is in the crowd (API.md, "Controlling the crowd"): only the fields given, so plain jobs stay plain."""
    fields = {
        "attributes": dict(attributes) if attributes else None,
        "distribution": {name: dict(shares) for name, shares in distribution.items()} if distribution else None,
        "identities": identities, "per_identity": per_identity, "variation": variation,
    }  # fmt: skip
    return _drop_none(fields)


def _job_body(
    count: int | None, seed: int | None, model: str | None, truncation: float | None, fmt: str, quality: int,
    priority: str | None, unique: bool, collection: str | None, novel: bool = False, crowd: Mapping[str, Any] | None = None,
    labels: bool = True,
) -> dict[str, Any]:  # fmt: skip
    """The ``POST /v1/jobs`` body; ``count`` may be None in an identity job (identities x per_identity)."""
    body = {"count": count, "seed": seed, "model": model, "truncation": truncation, "format": fmt, "quality": quality}
    # optional features are sent only when asked for, so servers without them accept the body
    extra = {"priority": priority, "unique": True if unique else None, "collection": collection, "novel": True if novel else None}
    extra["labels"] = None if labels else False
    return _drop_none({**body, **extra, **(crowd or {})})


def _image_request(
    seed: int, index: int, model: str | None, truncation: float | None, fmt: str, quality: int | None
) -> tuple[str, dict[str, Any]]:
    if fmt not in EXTENSIONS:
        raise ValueError(f"format must be one of {sorted(EXTENSIONS)}, got {fmt!r}")
    params = _drop_none({"index": index, "model": model, "truncation": truncation, "quality": quality})
    return f"/v1/images/{seed}.{EXTENSIONS[fmt]}", params


def _interpolate_request(
    from_seed: int, to_seed: int, steps: int, method: str, model: str | None, fmt: str, layout: str | None,
    options: Mapping[str, Any],
) -> tuple[dict[str, Any], dict[str, Any]]:  # fmt: skip
    body = {"from_seed": from_seed, "to_seed": to_seed, "steps": steps, "method": method, "format": fmt, "model": model}
    return _drop_none({**body, **options}), _drop_none({"layout": layout})


class _StreamTruncated(Exception):
    """A result stream ended cleanly, but before its end-of-archive blocks."""


class _Policy:
    """When to retry, and after how long. ``attempt`` counts the tries made so far (1 after the first)."""

    def __init__(self, max_retries: int, backoff_base: float, backoff_max: float, max_retry_after: float) -> None:
        self.max_retries, self.backoff_base, self.backoff_max = max_retries, backoff_base, backoff_max
        self.max_retry_after = max_retry_after

    def backoff(self, attempt: int) -> float:
        """Exponential, with jitter: between half and all of base * 2**(attempt-1), capped."""
        ceiling = min(self.backoff_max, self.backoff_base * 2.0 ** (attempt - 1))
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    def after_status(self, attempt: int, response: httpx.Response, idempotent: bool) -> float:
        """The delay before retrying this error response; raises its typed error when it is final."""
        error = error_from_response(response)
        status = response.status_code
        retryable = status in (429, 503) or (idempotent and status in (502, 504))
        if not retryable or attempt > self.max_retries:
            raise error
        if error.retry_after is None:
            delay = self.backoff(attempt)
        elif error.retry_after > self.max_retry_after:
            raise error
        else:  # at least what the server asked for, plus a little jitter so clients do not return in step
            delay = error.retry_after + random.uniform(0, min(1.0, error.retry_after / 10))
        self._log(response.request, f"{status} {error.code}", delay, attempt)
        return delay

    def after_error(self, attempt: int, exc: httpx.TransportError, idempotent: bool) -> float:
        """The delay before retrying after a transport error; raises SynthgenConnectionError when it is final."""
        never_sent = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)
        request = exc.request if _has_request(exc) else None
        if attempt > self.max_retries or not (idempotent or never_sent):
            where = f"{request.method} {request.url}: " if request is not None else ""
            raise SynthgenConnectionError(f"{where}{type(exc).__name__}: {exc or 'connection failed'}") from exc
        delay = self.backoff(attempt)
        self._log(request, type(exc).__name__, delay, attempt)
        return delay

    def _log(self, request: httpx.Request | None, why: str, delay: float, attempt: int) -> None:
        what = f"{request.method} {request.url.path}" if request is not None else "request"
        log.warning("%s: %s; retrying in %.1f s (retry %d of %d)", what, why, delay, attempt, self.max_retries)


def _has_request(exc: httpx.TransportError) -> bool:
    try:
        exc.request  # noqa: B018 (raises RuntimeError when the error was raised without a request)
    except RuntimeError:
        return False
    return True


class _ResultCursor:
    """Where a result download stands: the next sample to ask for, and the drops since the last progress."""

    def __init__(self, job_id: str, start: int, stop: int | None) -> None:
        if start < 0 or (stop is not None and stop <= start):
            raise ValueError(f"expected 0 <= start < stop, got start={start}, stop={stop}")
        self.path, self.next, self.stop, self.drops = _job_path(job_id, "/result"), start, stop, 0
        self.reader = TarSampleReader(start)

    @property
    def complete(self) -> bool:
        return self.reader.ended or (self.stop is not None and self.next >= self.stop)

    def params(self) -> dict[str, int]:
        return _drop_none({"start": self.next, "stop": self.stop})

    def feed(self, data: bytes) -> list[Sample]:
        samples = self.reader.feed(data)
        if samples:
            self.next, self.drops = samples[-1].index + 1, 0
        return samples

    def check_ended(self) -> None:
        if not self.complete:
            raise _StreamTruncated(f"the result stream ended before sample {self.next}")

    def dropped(self, policy: _Policy, exc: Exception) -> float:
        """Count a drop; the delay before resuming, or SynthgenConnectionError when out of retries."""
        self.drops += 1
        self.reader = TarSampleReader(self.next)
        if self.drops > policy.max_retries:
            raise SynthgenConnectionError(f"the result download kept dropping at sample {self.next}: {exc}") from exc
        delay = policy.backoff(self.drops)
        log.warning("result stream dropped at sample %d (%s); resuming in %.1f s", self.next, type(exc).__name__, delay)
        return delay


class _Base:
    def __init__(
        self, base_url: str, api_key: str | None, timeout: float, max_retries: int, backoff_base: float,
        backoff_max: float, max_retry_after: float, stream_read_timeout: float | None,
    ) -> None:  # fmt: skip
        self.base_url = base_url.rstrip("/")
        self._policy = _Policy(max_retries, backoff_base, backoff_max, max_retry_after)
        self._headers = {"User-Agent": f"synthgen-client/{__version__}", "Accept": "application/json"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._timeout = httpx.Timeout(timeout)
        self._stream_timeout = httpx.Timeout(timeout, read=stream_read_timeout)
