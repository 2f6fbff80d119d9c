"""The FastAPI app: the v1 routes of API.md, health, readiness and metrics."""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Depends, FastAPI, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service import metrics as M
from service.admission import admit, read_stats
from service.encoders import MEDIA_TYPES, encode_image
from service.errors import Conflict, InvalidRequest, NotFound, QueueFull, TooLarge
from service.http_errors import install_error_handlers
from service.latents import MAX_SEED
from service.queue import TERMINAL, JobSpec, job_view
from service.registry import ModelRegistry
from service.results import stream_tar
from service.runtime import Runtime
from service.schemas import (
    ErrorResponse,
    Health,
    ImageFormat,
    ImageShape,
    JobCreated,
    JobLinks,
    JobRequest,
    JobStatusResponse,
    ModelInfo,
    ModelList,
)
from service.settings import Settings, get_settings

log = logging.getLogger(__name__)
_JOB_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
_IMAGE_NAME = re.compile(r"^(\d{1,20})\.(png|jpg|jpeg|webp|npy)$")
_EXT_FORMAT: dict[str, ImageFormat] = {"png": "png", "jpg": "jpeg", "jpeg": "jpeg", "webp": "webp", "npy": "npy"}
_ERRORS: dict[int | str, dict[str, object]] = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in {404: "Not found", 409: "Conflict", 422: "Invalid request", 503: "Redis unreachable"}.items()
}


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


SettingsDep = Annotated[Settings, Depends(get_settings)]
RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
router = APIRouter()


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
    app.include_router(router)
    return app


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


def _check_job_id(job_id: str) -> None:
    if not _JOB_ID.match(job_id):
        raise NotFound(f"no job with id {job_id[:80]!r}", {"id": job_id[:80]})


@router.get("/v1/models", response_model=ModelList, tags=["models"])
async def list_models(runtime: RuntimeDep) -> ModelList:
    default = runtime.registry.default.package.ref
    return ModelList(
        models=[
            ModelInfo(
                name=m.package.name,
                version=m.package.version,
                sha256=m.package.sha256,
                latent_dim=m.package.latent_dim,
                image=ImageShape(**dict(zip(("height", "width", "channels"), m.package.image_shape, strict=True))),
                prior=m.package.manifest["prior"],
                default=m.package.ref == default,
                provider=m.provider,
            )
            for m in runtime.registry.all()
        ]
    )


@router.post("/v1/jobs", status_code=202, response_model=JobCreated, tags=["jobs"])
async def create_job(body: JobRequest, runtime: RuntimeDep, settings: SettingsDep, response: Response) -> JobCreated:
    if body.count > settings.max_count:
        raise InvalidRequest(
            f"count must be at most {settings.max_count} on this server, got {body.count}",
            {"field": "count", "max": settings.max_count},
        )
    model = runtime.registry.get(body.model)
    try:
        await admit(runtime.redis, settings.budget(), body.count)
    except (QueueFull, TooLarge) as exc:
        M.ADMISSIONS_REJECTED.labels(exc.code).inc()
        raise
    seed = body.seed if body.seed is not None else secrets.randbelow(MAX_SEED + 1)
    priority = body.priority or ("interactive" if body.count <= settings.interactive_max_count else "bulk")
    spec = JobSpec(
        model.package.ref, model.package.sha256, body.count, seed, body.truncation, body.format, body.quality, priority
    )
    job = await runtime.queue.create_job(spec)
    M.JOBS_CREATED.labels(model.package.ref, priority).inc()
    url = f"/v1/jobs/{job['id']}"
    response.headers["Location"] = url
    return JobCreated(
        id=job["id"], status=job["status"], model=job["model"], count=job["count"], seed=job["seed"],
        links=JobLinks(self=url, result=f"{url}/result"),
    )  # fmt: skip


@router.get("/v1/jobs/{job_id}", response_model=JobStatusResponse, tags=["jobs"])
async def get_job(job_id: str, runtime: RuntimeDep) -> JobStatusResponse:
    _check_job_id(job_id)
    return JobStatusResponse(**job_view(await runtime.queue.get_job(job_id)))


@router.delete("/v1/jobs/{job_id}", response_model=JobStatusResponse, tags=["jobs"])
async def cancel_job(job_id: str, runtime: RuntimeDep) -> JobStatusResponse:
    _check_job_id(job_id)
    before = job_view(await runtime.queue.get_job(job_id))
    job = job_view(await runtime.queue.stop_job(job_id, "cancelled"))
    if before["status"] in ("queued", "running") and job["status"] == "cancelled":
        M.JOBS_FINISHED.labels("cancelled").inc()
    return JobStatusResponse(**job)


@router.get(
    "/v1/jobs/{job_id}/result",
    tags=["jobs"],
    response_class=StreamingResponse,
    responses={200: {"content": {"application/x-tar": {}}, "description": "WebDataset tar, in index order"}},
)
async def get_result(
    job_id: str,
    runtime: RuntimeDep,
    start: Annotated[int, Query(ge=0, description="First index (inclusive)")] = 0,
    stop: Annotated[int | None, Query(ge=1, description="Last index (exclusive); default: count")] = None,
) -> StreamingResponse:
    _check_job_id(job_id)
    job = job_view(await runtime.queue.get_job(job_id))
    count = job["count"]
    stop = count if stop is None else stop
    if not start < stop <= count:
        raise InvalidRequest(f"expected 0 <= start < stop <= {count}, got start={start}, stop={stop}", {"count": count})
    if job["status"] in TERMINAL and job["status"] != "succeeded":
        raise Conflict(f"job {job_id} is {job['status']}; it has no complete result", {"status": job["status"]})
    fields = await runtime.queue.get_job(job_id)
    max_wait = max(1.0, float(job["expires_at"] or 0) - time.time())
    body = stream_tar(runtime.queue, job_id, int(fields["chunk_size"]), start, stop, max_wait)
    filename = f"{job_id}-{start:08d}-{stop:08d}.tar"
    headers = {"Content-Disposition": f'attachment; filename="{filename}"'}
    return StreamingResponse(body, media_type="application/x-tar", headers=headers)


@router.get(
    "/v1/images/{filename}",
    tags=["images"],
    responses={
        200: {"content": {t: {} for t in MEDIA_TYPES.values()}, "description": "One image"},
        304: {"description": "Not modified"},
    },
)
async def get_image(
    filename: str,
    request: Request,
    runtime: RuntimeDep,
    model: Annotated[str | None, Query(max_length=128)] = None,
    index: Annotated[int, Query(ge=0, le=MAX_SEED)] = 0,
    truncation: Annotated[float | None, Query(gt=0, le=100, allow_inf_nan=False)] = None,
    quality: Annotated[int, Query(ge=1, le=100)] = 90,
) -> Response:
    match = _IMAGE_NAME.match(filename)
    if not match:
        raise NotFound(
            f"expected /v1/images/{{seed}}.{{png|jpg|webp|npy}} with seed an integer, got {filename[:80]!r}",
            {"filename": filename[:80]},
        )
    seed, fmt = int(match.group(1)), _EXT_FORMAT[match.group(2)]
    if seed > MAX_SEED:
        raise InvalidRequest(f"seed must be in [0, 2**63-1], got {seed}", {"field": "seed"})
    loaded = runtime.registry.get(model)
    identity = f"{loaded.package.sha256}:{seed}:{index}:{truncation!r}:{fmt}:{quality}"
    etag = '"' + hashlib.sha256(identity.encode()).hexdigest()[:32] + '"'
    headers = {"ETag": etag, "Cache-Control": "public, max-age=31536000, immutable"}
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)

    image = (await runtime.decode_images(loaded, seed, np.array([index], dtype=np.int64), truncation))[0]
    data = await run_in_threadpool(encode_image, image, fmt, quality, runtime.settings.png_compress_level)
    return Response(data, media_type=MEDIA_TYPES[fmt], headers=headers)


@router.get("/healthz", response_model=Health, tags=["ops"])
async def healthz() -> Health:
    return Health(status="ok")


@router.get("/readyz", response_model=Health, tags=["ops"], responses={503: {"model": Health}})
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


@router.get("/metrics", tags=["ops"], response_class=Response)
async def metrics(runtime: RuntimeDep) -> Response:
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
