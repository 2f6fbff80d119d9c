"""One JSON error shape for every failure: ``{"error": {"code", "message", "details"}}``."""

from __future__ import annotations

import logging
from typing import Any

import redis.exceptions
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from synthgen.core import errors as E

log = logging.getLogger(__name__)

# The HTTP status of each domain error (the most specific class wins: QuotaExceeded is a QueueFull).
STATUS_OF: dict[type[E.SynthgenError], int] = {
    E.InvalidRequest: 422,
    E.InvalidCrowd: 400,  # a valid body the model's attributes cannot satisfy
    E.Unauthorized: 401,
    E.Forbidden: 403,
    E.NotFound: 404,
    E.Conflict: 409,
    E.TooLarge: 413,
    E.QueueFull: 429,
    E.Unavailable: 503,
    E.ModelPackageError: 500,
}

_STATUS_CODES = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    409: "conflict",
    413: "too_large",
    422: "invalid_request",
    429: "queue_full",
    503: "unavailable",
}


def error_response(
    status: int, code: str, message: str, details: dict[str, Any] | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = {"error": {"code": code, "message": message, "details": details or {}}}
    return JSONResponse(body, status_code=status, headers=headers)


def http_status(exc: E.SynthgenError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS_OF:
            return STATUS_OF[cls]
    return 500


def domain_error_response(exc: E.SynthgenError) -> JSONResponse:
    """A domain error in the one error shape, with its status and headers (Retry-After, WWW-Authenticate)."""
    headers = {}
    if exc.retry_after is not None:
        headers["Retry-After"] = str(exc.retry_after)
    if isinstance(exc, E.Unauthorized):
        headers["WWW-Authenticate"] = "Bearer"
    return error_response(http_status(exc), exc.code, exc.message, exc.details, headers=headers or None)


def _describe_validation(exc: RequestValidationError) -> tuple[str, list[dict[str, Any]]]:
    errors = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        entry = {"field": where, "problem": err.get("msg", "invalid"), "type": err.get("type")}
        if "input" in err and err.get("type") != "missing":
            entry["received"] = repr(err["input"])[:100]
        errors.append(entry)
    summary = "; ".join(
        f"{e['field']}: {e['problem']}" + (f" (received {e['received']})" if "received" in e else "") for e in errors
    )
    return summary or "invalid request", errors


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, errors = _describe_validation(exc)
        return error_response(422, "invalid_request", message, {"errors": errors})

    @app.exception_handler(StarletteHTTPException)
    async def http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _STATUS_CODES.get(exc.status_code, "error")
        message = str(exc.detail) if exc.detail else code
        if exc.status_code == 404 and message == "Not Found":
            message = f"no route {request.method} {request.url.path}"
        if exc.status_code == 400 and "parsing the body" in message:
            message = "expected a JSON body in UTF-8; the body could not be parsed"
        return error_response(exc.status_code, code, message, headers=getattr(exc, "headers", None))

    @app.exception_handler(E.SynthgenError)
    async def domain(request: Request, exc: E.SynthgenError) -> JSONResponse:
        return domain_error_response(exc)

    @app.exception_handler(redis.exceptions.RedisError)
    async def redis_down(request: Request, exc: redis.exceptions.RedisError) -> JSONResponse:
        log.warning("redis unavailable: %s", exc)
        return error_response(
            503, "unavailable", "the job store (Redis) is unreachable; retry shortly", headers={"Retry-After": "5"}
        )

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal", "internal error; it has been logged")
