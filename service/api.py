"""The FastAPI app: the v1 routers, the web page, health, readiness and metrics, and the middleware."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import metrics as M
from service import routes_images, routes_jobs
from service.admission import read_stats
from service.deps import RuntimeDep
from service.http_errors import error_response, install_error_handlers
from service.registry import ModelRegistry
from service.runtime import Runtime
from service.schemas import ErrorResponse, Health
from service.settings import Settings, get_settings

log = logging.getLogger(__name__)
STATIC = Path(__file__).resolve().parent / "static"
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in {
        400: "Body that is not valid JSON",
        401: "Missing or invalid API key",
        403: "A read-only API key asked to create or cancel work",
        404: "Not found",
        408: "The request body did not arrive in time",
        409: "Conflict",
        413: "Too large",
        422: "Invalid request",
        429: "Queue full or quota exceeded (see Retry-After)",
        503: "Redis unreachable",
    }.items()
}
ops = APIRouter()


def create_app(settings: Settings | None = None, with_worker: bool = True, registry: ModelRegistry | None = None) -> FastAPI:
    """Build the app; the lifespan loads models (unless given), connects Redis and (optionally) runs a worker."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.runtime = await Runtime.start(settings, with_worker, registry)
        try:
            yield
        finally:
            await app.state.runtime.close()

    app = FastAPI(
        title="synthgen",
        version="1",
        summary="Bulk synthetic faces from an adversarial autoencoder, served from a Redis job queue.",
        lifespan=lifespan,
        responses=_ERRORS,
    )
    app.dependency_overrides[get_settings] = lambda: settings
    install_error_handlers(app)
    _install_metrics_middleware(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes, timeout_s=settings.body_timeout_s)
    origins = [o.strip() for o in settings.cors_origins.split(",") if o.strip()]
    if origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "If-None-Match"],
            expose_headers=["Location", "Retry-After", "ETag"],
        )
    app.include_router(routes_jobs.router)
    app.include_router(routes_images.router)
    app.include_router(ops)
    if STATIC.is_dir():
        app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


class BodySizeLimit:
    """Read the whole request body before the app sees it, and answer 413 when it is over ``max_bytes``
    (declared in Content-Length or not) and 408 when it takes longer than ``timeout_s`` to arrive, so a
    slow client cannot hold a request open. Bodies are small (64 KiB by default), so holding one costs little."""

    def __init__(self, app: ASGIApp, max_bytes: int, timeout_s: float = 30.0) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers", []))
        declared = headers.get(b"content-length")
        if (declared is None or declared == b"0") and b"transfer-encoding" not in headers:
            await self.app(scope, receive, send)  # no body (RFC 9112, 6.3): nothing to limit or wait for
            return
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._too_large(scope, receive, send)
            return
        reading = _BodyReader(self.max_bytes)
        try:
            body = await asyncio.wait_for(reading.read(receive), self.timeout_s)
        except TimeoutError:
            if not reading.too_large:
                response = error_response(
                    408, "request_timeout", f"the request body did not arrive within {self.timeout_s:g} s",
                    {"timeout_s": self.timeout_s}, headers={"Connection": "close"},
                )  # fmt: skip
                await response(scope, receive, send)
                return
            body = None
        if reading.too_large:
            await self._too_large(scope, receive, send)
            return
        if body is None:
            return  # the client went away before its body was complete: there is no one to answer
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()  # after the body: waits for a disconnect, with no deadline
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(
            413, "too_large", f"request bodies are limited to {self.max_bytes} bytes", {"max_bytes": self.max_bytes},
            headers={"Connection": "close"},
        )  # fmt: skip
        await response(scope, receive, send)


class _BodyReader:
    """Reads a request body whole. Past ``max_bytes`` it keeps reading, and dropping, up to DRAIN_BYTES
    more, so that the client, still sending, can read the 413 rather than a connection reset."""

    DRAIN_BYTES = 1 << 20

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.too_large = False

    async def read(self, receive: Receive) -> bytes | None:
        """The body, or None when the client disconnected first or the body is too large."""
        parts: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return None
            part = message.get("body", b"")
            seen += len(part)
            if seen > self.max_bytes:
                self.too_large = True
                parts.clear()
            else:
                parts.append(part)
            if not message.get("more_body", False) or seen > self.max_bytes + self.DRAIN_BYTES:
                return None if self.too_large else b"".join(parts)


def _install_metrics_middleware(app: FastAPI) -> None:
    @app.middleware("http")
    async def observe(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        M.REQUESTS.labels(request.method, path, str(response.status_code)).inc()
        M.REQUEST_SECONDS.labels(request.method, path).observe(time.perf_counter() - started)
        return response


@ops.get("/", include_in_schema=False, response_model=None)
async def index() -> Response:
    """The web page for exploring the model."""
    page = STATIC / "index.html"
    if not page.is_file():
        return error_response(404, "not_found", "this build has no web page")
    return FileResponse(page, media_type="text/html")


@ops.get("/healthz", response_model=Health, tags=["ops"])
async def healthz() -> Health:
    return Health(status="ok")


@ops.get("/readyz", response_model=Health, tags=["ops"], responses={503: {"model": Health}})
async def readyz(request: Request, response: Response) -> Health:
    runtime: Runtime | None = getattr(request.app.state, "runtime", None)
    checks = {"models": "ok" if runtime is not None else "not loaded"}
    try:
        if runtime is None:
            raise RuntimeError("not started")
        await runtime.redis.ping()
        checks["redis"] = "ok"
        if runtime.worker_task is not None:
            checks["worker"] = "stopped" if runtime.worker_task.done() else "ok"
    except Exception as exc:  # any failure means not ready
        checks["redis"] = f"unreachable: {type(exc).__name__}"
    ready = all(v == "ok" for v in checks.values())
    response.status_code = 200 if ready else 503
    return Health(status="ready" if ready else "not ready", checks=checks)


@ops.get("/metrics", tags=["ops"], response_class=Response)
async def metrics(request: Request, runtime: RuntimeDep) -> Response:
    if runtime.settings.metrics_require_key:
        runtime.keyring.identify(request.headers.get("authorization"))
    try:
        for priority, depth in (await runtime.queue.depth()).items():
            M.QUEUE_LAG.labels(priority).set(depth["lag"])
            M.QUEUE_PENDING.labels(priority).set(depth["pending"])
        stats = await read_stats(runtime.redis, runtime.settings.result_ttl_s)
        M.QUEUED_IMAGES.set(stats.queued_images)
        M.RESULT_BYTES_STORED.set(stats.result_bytes)
        M.DRAIN_RATE.set(stats.drain_rate)
    except Exception as exc:  # metrics must still be served when Redis is down
        log.warning("queue depth unavailable: %s", exc)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
