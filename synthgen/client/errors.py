"""The client's exceptions: one per error code of the API, plus transport failures."""

from __future__ import annotations

import email.utils
import logging
import time
from typing import Any

import httpx

log = logging.getLogger(__name__)


class SynthgenClientError(Exception):
    """Base of every error this client raises."""


class SynthgenConnectionError(SynthgenClientError):
    """The server could not be reached, or the connection kept dropping, after every retry."""


class SynthgenProtocolError(SynthgenClientError):
    """The server sent something this client cannot read, such as a malformed tar."""


class SynthgenTimeoutError(SynthgenClientError, TimeoutError):
    """``wait()`` gave up before the job finished."""


class SynthgenAPIError(SynthgenClientError):
    """An error answer of the API: ``{"error": {"code", "message", "details"}}`` and its HTTP status."""

    def __init__(
        self, status: int, code: str, message: str, details: dict[str, Any] | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message
        self.details = details or {}
        self.retry_after = retry_after  # seconds, from the Retry-After header


class InvalidRequestError(SynthgenAPIError):
    """400 or 422 ``invalid_request``."""


class UnauthorizedError(SynthgenAPIError):
    """401: no API key, or an unknown one."""


class ForbiddenError(SynthgenAPIError):
    """403."""


class NotFoundError(SynthgenAPIError):
    """404: no such job, model or route (another key's jobs read as not found)."""


class ConflictError(SynthgenAPIError):
    """409, e.g. the result of a job that failed or was cancelled."""


class TooLargeError(SynthgenAPIError):
    """413: the job can never fit the server's budget; split it."""


class RetryLaterError(SynthgenAPIError):
    """429 or 503: the server asked to come back after ``retry_after`` seconds."""


class QueueFullError(RetryLaterError):
    """429 ``queue_full``."""


class QuotaExceededError(RetryLaterError):
    """429 ``quota_exceeded``."""


class UnavailableError(RetryLaterError):
    """503 ``unavailable``."""


_ERRORS_BY_CODE: dict[str, type[SynthgenAPIError]] = {
    "invalid_request": InvalidRequestError,
    "unauthorized": UnauthorizedError,
    "forbidden": ForbiddenError,
    "not_found": NotFoundError,
    "conflict": ConflictError,
    "too_large": TooLargeError,
    "queue_full": QueueFullError,
    "quota_exceeded": QuotaExceededError,
    "unavailable": UnavailableError,
}
_ERRORS_BY_STATUS: dict[int, type[SynthgenAPIError]] = {
    400: InvalidRequestError,
    401: UnauthorizedError,
    403: ForbiddenError,
    404: NotFoundError,
    409: ConflictError,
    413: TooLargeError,
    422: InvalidRequestError,
    429: RetryLaterError,
    503: UnavailableError,
}


def retry_after_seconds(response: httpx.Response) -> float | None:
    """The Retry-After header in seconds (it may be a number or an HTTP date), or None."""
    value = response.headers.get("retry-after", "").strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def error_from_response(response: httpx.Response) -> SynthgenAPIError:
    """The typed error for an error response (whose body has been read)."""
    status = response.status_code
    try:
        error = response.json()["error"]
        code, message = str(error["code"]), str(error.get("message", ""))
        details = dict(error.get("details") or {})
    except (ValueError, KeyError, TypeError, AttributeError):
        code, message, details = f"http_{status}", response.text[:200] or response.reason_phrase, {}
    cls = _ERRORS_BY_CODE.get(code) or _ERRORS_BY_STATUS.get(status, SynthgenAPIError)
    return cls(status, code, message, details, retry_after_seconds(response))
