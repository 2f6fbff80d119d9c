"""synthgen's domain errors: a stable machine-readable ``code``, a message, and details.

They know nothing of HTTP. The API layer (``service/api/errors.py``), and only it, maps each class to
a status code and headers.
"""

from __future__ import annotations

from typing import Any


class SynthgenError(Exception):
    """Base of every domain error; ``code`` is stable and machine-readable.

    ``retry_after`` (seconds), when set, says the same request may succeed later.
    """

    code = "internal"

    def __init__(self, message: str, details: dict[str, Any] | None = None, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}
        self.retry_after = retry_after


class InvalidRequest(SynthgenError):
    code = "invalid_request"


class InvalidCrowd(InvalidRequest):
    """A crowd (attributes, distribution, identities) that the model cannot make; ``details`` name the
    ``field`` and list what is ``allowed`` there."""


class Unauthorized(SynthgenError):
    code = "unauthorized"


class Forbidden(SynthgenError):
    code = "forbidden"


class NotFound(SynthgenError):
    code = "not_found"


class Conflict(SynthgenError):
    code = "conflict"


class TooLarge(SynthgenError):
    code = "too_large"


class QueueFull(SynthgenError):
    """Admission control refused new work for now; ``retry_after`` says when to try again."""

    code = "queue_full"

    def __init__(self, message: str, retry_after: int, details: dict[str, Any] | None = None) -> None:
        super().__init__(message, {**(details or {}), "retry_after": retry_after}, retry_after)


class QuotaExceeded(QueueFull):
    """The API key has used its quota; ``retry_after`` says when it renews."""

    code = "quota_exceeded"


class Unavailable(SynthgenError):
    """Nothing could serve the request just now (no worker answered in time); ``retry_after`` says when to retry."""

    code = "unavailable"

    def __init__(self, message: str, retry_after: int, details: dict[str, Any] | None = None) -> None:
        super().__init__(message, {**(details or {}), "retry_after": retry_after}, retry_after)


class ModelPackageError(SynthgenError):
    """A model package is missing, malformed, truncated or tampered with."""

    code = "model_package_invalid"
