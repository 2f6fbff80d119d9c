"""The job routes: models, create, status, cancel, the streamed tar result, and one image of a job."""

from __future__ import annotations

import secrets
import tarfile
import time
from typing import Annotated

from fastapi import APIRouter, Query, Response
from fastapi.responses import StreamingResponse

from service import auth
from service import metrics as M
from service.admission import admit
from service.deps import RuntimeDep, SettingsDep, TenantDep, WriterDep, owned_job
from service.encoders import MEDIA_TYPES
from service.errors import Conflict, InvalidRequest, QueueFull, TooLarge
from service.latents import MAX_SEED
from service.queue import TERMINAL, JobSpec, job_view
from service.results import stream_tar
from service.schemas import ImageShape, JobCreated, JobLinks, JobRequest, JobStatusResponse, ModelInfo, ModelList

router = APIRouter(prefix="/v1")


@router.get("/models", response_model=ModelList, tags=["models"])
async def list_models(runtime: RuntimeDep, tenant: TenantDep) -> ModelList:
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
                uniqueness_threshold=m.package.uniqueness_threshold,
            )
            for m in runtime.registry.all()
        ]
    )


@router.post("/jobs", status_code=202, response_model=JobCreated, tags=["jobs"])
async def create_job(
    body: JobRequest, runtime: RuntimeDep, settings: SettingsDep, tenant: WriterDep, response: Response
) -> JobCreated:
    if body.count > settings.max_count:
        raise InvalidRequest(
            f"count must be at most {settings.max_count} on this server, got {body.count}",
            {"field": "count", "max": settings.max_count},
        )
    model = runtime.registry.get(body.model)
    if body.novel and model.package.privacy_index_path is None:
        raise InvalidRequest(
            f"novel needs a model package with a training index; {model.package.ref} has none "
            "(export it with synthgen export --train-index)",
            {"field": "novel", "model": model.package.ref},
        )
    quotas = settings.quotas()
    await auth.check_concurrency(runtime.redis, tenant, quotas)
    await auth.charge(runtime.redis, tenant, quotas, body.count)
    try:
        await admit(runtime.redis, settings.budget(), body.count)
    except (QueueFull, TooLarge) as exc:
        await auth.refund(runtime.redis, tenant, quotas, body.count)
        M.ADMISSIONS_REJECTED.labels(exc.code).inc()
        raise
    seed = body.seed if body.seed is not None else secrets.randbelow(MAX_SEED + 1)
    priority = body.priority or ("interactive" if body.count <= settings.interactive_max_count else "bulk")
    spec = JobSpec(
        model.package.ref, model.package.sha256, body.count, seed, body.truncation, body.format, body.quality, priority,
        tenant, body.unique or body.collection is not None, body.collection or "", body.novel,
    )  # fmt: skip
    job = await runtime.queue.create_job(spec)
    await auth.register_job(runtime.redis, tenant, job["id"], settings.result_ttl_s)
    M.JOBS_CREATED.labels(model.package.ref, priority).inc()
    url = f"/v1/jobs/{job['id']}"
    response.headers["Location"] = url
    return JobCreated(
        id=job["id"], status=job["status"], model=job["model"], count=job["count"], seed=job["seed"],
        links=JobLinks(self=url, result=f"{url}/result"),
    )  # fmt: skip


@router.get("/jobs/{job_id}", response_model=JobStatusResponse, tags=["jobs"])
async def get_job(job_id: str, runtime: RuntimeDep, tenant: TenantDep) -> JobStatusResponse:
    return JobStatusResponse(**job_view(await owned_job(runtime, job_id, tenant)))


@router.delete("/jobs/{job_id}", response_model=JobStatusResponse, tags=["jobs"])
async def cancel_job(job_id: str, runtime: RuntimeDep, tenant: WriterDep) -> JobStatusResponse:
    before = job_view(await owned_job(runtime, job_id, tenant))
    job = job_view(await runtime.queue.stop_job(job_id, "cancelled"))
    if before["status"] in ("queued", "running") and job["status"] == "cancelled":
        M.JOBS_FINISHED.labels("cancelled").inc()
    return JobStatusResponse(**job)


def _check_usable(job: dict[str, object], job_id: str) -> None:
    if job["status"] in TERMINAL and job["status"] != "succeeded":
        raise Conflict(f"job {job_id} is {job['status']}; it has no complete result", {"status": job["status"]})


@router.get(
    "/jobs/{job_id}/result",
    tags=["jobs"],
    response_class=StreamingResponse,
    responses={200: {"content": {"application/x-tar": {}}, "description": "WebDataset tar, in index order"}},
)
async def get_result(
    job_id: str,
    runtime: RuntimeDep,
    tenant: TenantDep,
    start: Annotated[int, Query(ge=0, description="First index (inclusive)")] = 0,
    stop: Annotated[int | None, Query(ge=1, description="Last index (exclusive); default: count")] = None,
) -> StreamingResponse:
    fields = await owned_job(runtime, job_id, tenant)
    job = job_view(fields)
    count = job["count"]
    stop = count if stop is None else stop
    if not start < stop <= count:
        raise InvalidRequest(f"expected 0 <= start < stop <= {count}, got start={start}, stop={stop}", {"count": count})
    _check_usable(job, job_id)
    max_wait = max(1.0, float(job["expires_at"] or 0) - time.time())
    body = stream_tar(runtime.queue, job_id, int(fields["chunk_size"]), start, stop, max_wait)
    filename = f"{job_id}-{start:08d}-{stop:08d}.tar"
    headers = {"Content-Disposition": f'attachment; filename="{filename}"'}
    return StreamingResponse(body, media_type="application/x-tar", headers=headers)


@router.get(
    "/jobs/{job_id}/images/{index}",
    tags=["jobs"],
    responses={200: {"content": {t: {} for t in MEDIA_TYPES.values()}, "description": "One image of the job"}},
)
async def get_job_image(job_id: str, index: int, runtime: RuntimeDep, tenant: TenantDep) -> Response:
    fields = await owned_job(runtime, job_id, tenant)
    job = job_view(fields)
    if not 0 <= index < job["count"]:
        raise InvalidRequest(f"index must be in [0, {job['count']}), got {index}", {"count": job["count"]})
    _check_usable(job, job_id)
    chunk_size = int(fields["chunk_size"])
    chunk, offset = divmod(index, chunk_size)
    if not await runtime.queue.chunk_done(job_id, chunk):
        error = Conflict(f"image {index} of job {job_id} is not generated yet", {"done": job["done"]})
        error.headers = {"Retry-After": "1"}
        raise error
    tar, offsets = await runtime.queue.chunk_result(job_id, chunk)
    header = tarfile.TarInfo.frombuf(tar[offsets[offset] : offsets[offset] + tarfile.BLOCKSIZE], "utf-8", "surrogateescape")
    data_start = offsets[offset] + tarfile.BLOCKSIZE
    data = tar[data_start : data_start + header.size]
    fmt = job["format"]
    return Response(data, media_type=MEDIA_TYPES[fmt], headers={"Cache-Control": "private, max-age=3600"})
