"""Every Redis key prefix, stream and group name in one place."""

from __future__ import annotations

from synthgen.core.jobs import Priority

PREFIX = "synthgen"
STREAM_INTERACTIVE = f"{PREFIX}:stream:interactive"
STREAM_BULK = f"{PREFIX}:stream:bulk"
STREAMS = {Priority.INTERACTIVE: STREAM_INTERACTIVE, Priority.BULK: STREAM_BULK}
# Workers read the streams in this order: interactive work always goes first.
STREAM_ORDER = (STREAM_INTERACTIVE, STREAM_BULK)
WORKER_GROUP = f"{PREFIX}:workers"
WORKER_HEALTH_PREFIX = f"{PREFIX}:worker:"
REDELIVERIES_KEY = f"{PREFIX}:stats:redeliveries"


def job_key(job_id: str) -> str:
    """Hash of a job's fields (status, count, done, ...)."""
    return f"{PREFIX}:job:{job_id}"


def job_done_key(job_id: str) -> str:
    """Set of the chunk numbers of a job that are complete."""
    return f"{PREFIX}:job:{job_id}:done"


def job_progress_key(job_id: str) -> str:
    """List that each completed chunk's number is pushed to, to wake readers waiting on the job."""
    return f"{PREFIX}:job:{job_id}:progress"


def result_key(job_id: str, chunk: int) -> str:
    """Hash of one chunk's result: its tar blocks and the offset of each sample in them."""
    return f"{PREFIX}:result:{job_id}:{chunk}"


def worker_health_key(name: str) -> str:
    return f"{WORKER_HEALTH_PREFIX}{name}"


# Statistics that admission control reads.
QUEUED_IMAGES_KEY = f"{PREFIX}:stats:queued_images"  # images accepted and not yet done, cancelled or failed
DRAIN_BUCKET_S = 10  # completed images are counted per 10 s bucket, for the drain rate
RESULT_BYTES_BUCKET_S = 600  # stored result bytes are counted per 10 min bucket of their expiry time


def drained_key(bucket: int) -> str:
    """Images completed during drain bucket ``bucket`` (unix time // DRAIN_BUCKET_S)."""
    return f"{PREFIX}:stats:drained:{bucket}"


def result_bytes_key(bucket: int) -> str:
    """Result bytes that expire during bucket ``bucket`` (expiry unix time // RESULT_BYTES_BUCKET_S)."""
    return f"{PREFIX}:stats:result_bytes:{bucket}"


def quota_images_key(tenant: str, day: str) -> str:
    """Images a tenant (an API key's id) asked for on a UTC day (YYYYMMDD)."""
    return f"{PREFIX}:quota:{tenant}:images:{day}"


def tenant_jobs_key(tenant: str) -> str:
    """Set of a tenant's job ids, for its concurrent-jobs quota."""
    return f"{PREFIX}:quota:{tenant}:jobs"


def unique_state_key(job_id: str) -> str:
    """Hash of a unique job's per-chunk state: accepted embeddings and the next candidate index."""
    return f"{PREFIX}:job:{job_id}:unique"


def collection_key(tenant: str, name: str) -> str:
    """List of the accepted embeddings (float32 blocks) of every job in a tenant's collection."""
    return f"{PREFIX}:collection:{tenant}:{name}"


def collection_lock_key(tenant: str, name: str) -> str:
    return f"{PREFIX}:collection:{tenant}:{name}:lock"
