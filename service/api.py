"""The FastAPI app: the v1 routers, the web page, health, readiness and metrics, and the middleware."""

from __future__ import annotations

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
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
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
    """Refuse request bodies over ``max_bytes`` with 413, whether or not they declare a Content-Length."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise _TooLarge
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(
            413, "too_large", f"request bodies are limited to {self.max_bytes} bytes", {"max_bytes": self.max_bytes}
        )
        await response(scope, receive, send)


class _TooLarge(Exception):
    pass


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
