"""A typed Python client for the synthgen v1 HTTP API (API.md), sync and async, on httpx.

    with SynthgenClient("http://127.0.0.1:8000", api_key="...") as client:
        job = client.create_job(1000, seed=42)
        client.download(job.id, "faces.tar")  # streams while the job runs

Failures raise ``SynthgenAPIError`` subclasses, one per error code of the API. A request is retried
after ``Retry-After`` on 429 and 503, and with exponential backoff and jitter on connection errors and
502/503/504; other 4xx are never retried. ``POST /v1/jobs`` is not idempotent, so it is retried only
when the server cannot have taken it (connection refused, 429, 503). A result download that drops
mid-stream resumes at the first incomplete sample (``?start=``), so the bytes it yields are exactly
those of an uninterrupted download.
"""

from __future__ import annotations

from synthgen.client.aio import AsyncSynthgenClient
from synthgen.client.constants import TAR_END, TERMINAL_STATUSES
from synthgen.client.errors import (
    ConflictError,
    ForbiddenError,
    InvalidRequestError,
    NotFoundError,
    QueueFullError,
    QuotaExceededError,
    RetryLaterError,
    SynthgenAPIError,
    SynthgenClientError,
    SynthgenConnectionError,
    SynthgenProtocolError,
    SynthgenTimeoutError,
    TooLargeError,
    UnauthorizedError,
    UnavailableError,
    error_from_response,
    retry_after_seconds,
)
from synthgen.client.models import Job, ModelInfo, Sample
from synthgen.client.sync import SynthgenClient
from synthgen.client.tarstream import TarSampleReader

__all__ = [
    "TAR_END",
    "TERMINAL_STATUSES",
    "AsyncSynthgenClient",
    "ConflictError",
    "ForbiddenError",
    "InvalidRequestError",
    "Job",
    "ModelInfo",
    "NotFoundError",
    "QueueFullError",
    "QuotaExceededError",
    "RetryLaterError",
    "Sample",
    "SynthgenAPIError",
    "SynthgenClient",
    "SynthgenClientError",
    "SynthgenConnectionError",
    "SynthgenProtocolError",
    "SynthgenTimeoutError",
    "TarSampleReader",
    "TooLargeError",
    "UnauthorizedError",
    "UnavailableError",
    "error_from_response",
    "retry_after_seconds",
]
