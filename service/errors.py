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


class InvalidRequest(SynthgenError):
    code, status = "invalid_request", 422


class NotFound(SynthgenError):
    code, status = "not_found", 404


class Conflict(SynthgenError):
    code, status = "conflict", 409


class Unavailable(SynthgenError):
    code, status = "unavailable", 503


class ModelPackageError(SynthgenError):
    """A model package is missing, malformed, truncated or tampered with."""

    code, status = "model_package_invalid", 500
