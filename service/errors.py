"""synthgen's domain errors. The API layer, and only it, turns them into HTTP responses."""

from __future__ import annotations

from typing import Any


class SynthgenError(Exception):
    """Base of every domain error; ``code`` is stable and machine-readable."""

    code = "internal"
    status = 500

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}
        self.headers: dict[str, str] = {}


class InvalidRequest(SynthgenError):
    code, status = "invalid_request", 422


class Unauthorized(SynthgenError):
    code, status = "unauthorized", 401

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message, details)
        self.headers = {"WWW-Authenticate": "Bearer"}


class Forbidden(SynthgenError):
    code, status = "forbidden", 403


class NotFound(SynthgenError):
    code, status = "not_found", 404


class Conflict(SynthgenError):
    code, status = "conflict", 409


class TooLarge(SynthgenError):
    code, status = "too_large", 413


class QueueFull(SynthgenError):
    """Admission control refused new work for now; ``retry_after`` says when to try again."""

    code, status = "queue_full", 429

    def __init__(self, message: str, retry_after: int, details: dict[str, Any] | None = None) -> None:
        super().__init__(message, {**(details or {}), "retry_after": retry_after})
        self.retry_after = retry_after
        self.headers = {"Retry-After": str(retry_after)}


class QuotaExceeded(QueueFull):
    """The API key has used its quota; ``retry_after`` says when it renews."""

    code, status = "quota_exceeded", 429


class Unavailable(SynthgenError):
    code, status = "unavailable", 503


class ModelPackageError(SynthgenError):
    """A model package is missing, malformed, truncated or tampered with."""

    code, status = "model_package_invalid", 500
