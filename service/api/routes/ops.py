"""Operational routes: the web page, liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.api.deps import RuntimeDep
from service.api.errors import error_response
from service.api.schemas import Health
from service.runtime import Runtime
from service.telemetry.queue_gauges import refresh_queue_gauges

STATIC = Path(__file__).resolve().parent.parent / "static"
router = APIRouter()


@router.get("/", include_in_schema=False, response_model=None)
async def index() -> Response:
    """The web page for exploring the model."""
    page = STATIC / "index.html"
    if not page.is_file():
        return error_response(404, "not_found", "this build has no web page")
    return FileResponse(page, media_type="text/html")


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
async def metrics(request: Request, runtime: RuntimeDep) -> Response:
    if runtime.settings.metrics_require_key:
        runtime.keyring.identify(request.headers.get("authorization"))
    await refresh_queue_gauges(runtime.queue, runtime.settings.result_ttl_s)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
