"""FastAPI dependencies shared by the route modules: settings, the runtime, the caller's tenant."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import Depends, Request

from service.queue.jobs import Job
from service.runtime import Runtime
from service.settings import Settings
from synthgen.core.errors import Forbidden, NotFound

_JOB_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")


# The dependencies are async functions, though they never await: FastAPI runs a plain function in a worker
# thread, and that hop, on every request, cost more CPU than the route itself.
async def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


async def get_tenant(request: Request) -> str:
    """The id of the caller's API key (401 without a valid one), or the anonymous tenant when no keys are set."""
    runtime: Runtime = request.app.state.runtime
    return runtime.keyring.identify(request.headers.get("authorization"))


async def get_writer(request: Request) -> str:
    """Like get_tenant, for routes that create or cancel work: a read-only key gets 403."""
    runtime: Runtime = request.app.state.runtime
    caller = runtime.keyring.caller(request.headers.get("authorization"))
    if caller.read_only:
        raise Forbidden(f"this API key is read-only: it cannot {request.method} {request.url.path}")
    return caller.tenant


async def get_app_settings(request: Request) -> Settings:
    """The settings the app was built with (``create_app``). Read from the app, not through a dependency
    override: FastAPI re-inspects every dependency's signature on every request while any override is set."""
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
TenantDep = Annotated[str, Depends(get_tenant)]
WriterDep = Annotated[str, Depends(get_writer)]


async def owned_job(runtime: Runtime, job_id: str, tenant: str) -> Job:
    """The job, when it exists and belongs to ``tenant``; any other case is the same 404."""
    if not _JOB_ID.match(job_id):
        raise NotFound(f"no job with id {job_id[:80]!r}", {"id": job_id[:80]})
    job = await runtime.queue.get_job(job_id)
    if job.owner != tenant:
        raise NotFound(f"no job with id {job_id!r} (it may have expired)", {"id": job_id})
    return job
