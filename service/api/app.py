"""The FastAPI app: the v1 routers, the web page, health, readiness and metrics, and the middleware."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles

from service.api.errors import install_error_handlers
from service.api.middleware import BodySizeLimit, RequestMetrics
from service.api.routes import images, jobs, models, ops
from service.api.schemas import ErrorResponse
from service.embedded_redis import EmbeddedRedis
from service.engine.registry import ModelRegistry
from service.runtime import Runtime
from service.settings import Settings, get_settings

log = logging.getLogger(__name__)
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


def create_app(
    settings: Settings | None = None,
    with_worker: bool = True,
    registry: ModelRegistry | None = None,
    embedded: EmbeddedRedis | None = None,
) -> FastAPI:
    """Build the app; the lifespan loads models (unless given), connects Redis (``embedded``, when already
    started, is used and stopped with the app) and (optionally) runs a worker."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.runtime = await Runtime.start(settings, with_worker, registry, embedded)
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

    app.state.settings = settings  # what the routes' SettingsDep reads
    install_error_handlers(app)
    app.add_middleware(RequestMetrics)
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
    for routes in (models, jobs, images, ops):
        app.include_router(routes.router)
    if ops.STATIC.is_dir():
        app.mount("/static", StaticFiles(directory=ops.STATIC), name="static")
    return app
