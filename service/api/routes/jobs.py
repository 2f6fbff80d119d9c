"""The job routes: create, status, cancel, the streamed tar result, and one image of a job."""

from __future__ import annotations

import asyncio
import tarfile
import time
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import StreamingResponse

from service.api.deps import RuntimeDep, SettingsDep, TenantDep, WriterDep, owned_job
from service.api.schemas import CrowdView, JobCreated, JobLinks, JobRequest, JobStatusResponse
from service.engine.labeling import histogram
from service.queue.jobs import Job
from service.queue.submit import Order, submit
from service.queue.tar_stream import stream_tar
from service.telemetry import instruments as M
from synthgen.core.crowd import Crowd
from synthgen.core.dataset_card import CardFacts, dataset_card, requested_counts
from synthgen.core.errors import Conflict, InvalidRequest
from synthgen.core.images import MEDIA_TYPES
from synthgen.core.jobs import JobStatus

router = APIRouter(prefix="/v1")


@router.post("/jobs", status_code=202, response_model=JobCreated, tags=["jobs"])
async def create_job(
    body: JobRequest, runtime: RuntimeDep, settings: SettingsDep, tenant: WriterDep, response: Response
) -> JobCreated:
    if body.count is None and body.identities is None and body.per_identity is None:
        # the schema's own error, as when count was required: only identity jobs may omit it
        raise RequestValidationError([{"type": "missing", "loc": ("body", "count"), "msg": "Field required", "input": None}])
    package = runtime.registry.get(body.model).package
    crowd = Crowd(body.attributes, body.distribution, body.identities, body.per_identity, body.variation)
    order = Order(
        count=body.count, seed=body.seed, truncation=body.truncation, fmt=body.format, quality=body.quality,
        priority=body.priority, unique=body.unique, collection=body.collection, novel=body.novel, crowd=crowd,
        labels=body.labels,
    )  # fmt: skip
    job = await submit(runtime.redis, runtime.queue, settings, package, tenant, order)
    url = f"/v1/jobs/{job.id}"
    response.headers["Location"] = url
    view = job.view()
    return JobCreated(
        id=job.id, status=job.status, model=job.model, count=job.count, seed=job.seed,
        links=JobLinks(self=url, result=f"{url}/result", card=f"{url}/card"), labels=job.labels,
        **{name: view[name] for name in CrowdView.model_fields},
    )  # fmt: skip


@router.get("/jobs/{job_id}", response_model=JobStatusResponse, tags=["jobs"])
async def get_job(job_id: str, runtime: RuntimeDep, tenant: TenantDep) -> JobStatusResponse:
    return JobStatusResponse(**(await owned_job(runtime, job_id, tenant)).view())


@router.delete("/jobs/{job_id}", response_model=JobStatusResponse, tags=["jobs"])
async def cancel_job(job_id: str, runtime: RuntimeDep, tenant: WriterDep) -> JobStatusResponse:
    before = (await owned_job(runtime, job_id, tenant)).status_at()
    job = await runtime.queue.stop_job(job_id, JobStatus.CANCELLED)
    if before.active and job.status_at() is JobStatus.CANCELLED:
        M.JOBS_FINISHED.labels(JobStatus.CANCELLED.value).inc()
    return JobStatusResponse(**job.view())


def _check_usable(job: Job) -> None:
    status = job.status_at()
    if status.unusable:
        raise Conflict(f"job {job.id} is {status}; it has no complete result", {"status": status.value})


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
    job = await owned_job(runtime, job_id, tenant)
    count = job.count
    stop = count if stop is None else stop
    if not start < stop <= count:
        raise InvalidRequest(f"expected 0 <= start < stop <= {count}, got start={start}, stop={stop}", {"count": count})
    _check_usable(job)
    max_wait = max(1.0, job.expires_at - time.time())
    body = stream_tar(runtime.queue, job_id, job.chunk_size, start, stop, max_wait)
    filename = f"{job_id}-{start:08d}-{stop:08d}.tar"
    headers = {"Content-Disposition": f'attachment; filename="{filename}"'}
    return StreamingResponse(body, media_type="application/x-tar", headers=headers)


@router.get(
    "/jobs/{job_id}/images/{index}",
    tags=["jobs"],
    responses={200: {"content": {t: {} for t in MEDIA_TYPES.values()}, "description": "One image of the job"}},
)
async def get_job_image(job_id: str, index: int, runtime: RuntimeDep, tenant: TenantDep) -> Response:
    job = await owned_job(runtime, job_id, tenant)
    if not 0 <= index < job.count:
        raise InvalidRequest(f"index must be in [0, {job.count}), got {index}", {"count": job.count})
    _check_usable(job)
    chunk, offset = divmod(index, job.chunk_size)
    if not await runtime.queue.chunk_done(job_id, chunk):
        raise Conflict(f"image {index} of job {job_id} is not generated yet", {"done": job.done}, retry_after=1)
    tar, offsets = await runtime.queue.chunk_result(job_id, chunk)
    header = tarfile.TarInfo.frombuf(tar[offsets[offset] : offsets[offset] + tarfile.BLOCKSIZE], "utf-8", "surrogateescape")
    data_start = offsets[offset] + tarfile.BLOCKSIZE
    data = tar[data_start : data_start + header.size]
    return Response(data, media_type=MEDIA_TYPES[job.fmt], headers={"Cache-Control": "private, max-age=3600"})


@router.get(
    "/jobs/{job_id}/card",
    tags=["jobs"],
    response_class=Response,
    responses={
        200: {"content": {"text/markdown": {}}, "description": "The dataset card (markdown, Hugging Face front matter)"},
        409: {"description": "The job is not finished yet (with Retry-After), or failed, cancelled or expired"},
    },
)
async def get_card(job_id: str, runtime: RuntimeDep, tenant: TenantDep) -> Response:
    """The job's dataset card: model and sha256, request, counts, requested vs predicted histograms, how it was made."""
    job = await owned_job(runtime, job_id, tenant)
    _check_usable(job)
    if job.status_at() is not JobStatus.SUCCEEDED:  # its histograms count every image: it exists once all are made
        raise Conflict(
            f"job {job.id} is {job.status_at()} ({job.done} of {job.count} images); its card exists once it has succeeded",
            {"status": job.status_at().value, "done": job.done, "count": job.count},
            retry_after=1,
        )
    package = runtime.registry.get(job.model).package
    space = package.attributes
    requested = await asyncio.to_thread(requested_counts, job.crowd, space, job.seed, job.count)
    classifier = package.manifest.get("classifier")
    labeled = bool(classifier) and job.labels
    predicted, agreement = histogram(await runtime.queue.predicted_counts(job.id)) if labeled else (None, {})
    facts = CardFacts(
        job_id=job.id, model=job.model, sha256=job.sha256, request=job.request(), count=job.count, fmt=job.fmt,
        crowd=job.crowd, space=space, requested=requested, predicted=predicted, agreement=agreement,
        classifier_accuracy=dict((classifier or {}).get("accuracy") or {}),
        finished_at=datetime.fromtimestamp(job.finished_at, UTC).isoformat(timespec="seconds") if job.finished_at else "",
    )  # fmt: skip
    return Response(dataset_card(facts), media_type="text/markdown; charset=utf-8")
