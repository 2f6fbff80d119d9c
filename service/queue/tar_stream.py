"""Streaming a job's result as one tar, in index order, while its chunks are still being computed."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator

from service.queue.streams import JobQueue
from synthgen.core.webdataset import TAR_END

log = logging.getLogger(__name__)
# A waiting reader blocks on the job's progress list, which every completed chunk pushes to, so it
# wakes as soon as a chunk is stored. The timeout is a fallback (another reader of the same job may
# have taken the notification): short at first, then backing off.
POLL_S = 0.01
FAST_POLLS = 10
MAX_POLL_S = 0.25


class ResultAborted(Exception):
    """The job stopped (failed, cancelled, expired) before the requested range was complete."""


async def _wait_for_chunk(queue: JobQueue, job_id: str, chunk: int, deadline: float) -> None:
    delay, polls = POLL_S, 0
    while not await queue.chunk_done(job_id, chunk):
        job = await queue.get_job(job_id)
        status = job.status_at()
        if status.unusable:
            raise ResultAborted(f"job {job_id} is {status}: {job.error or 'no more chunks will come'}")
        if time.monotonic() > deadline:
            raise ResultAborted(f"job {job_id}: chunk {chunk} not done before the job's expiry")
        await queue.wait_for_progress(job_id, delay)  # wakes early when a chunk of the job completes
        polls += 1
        if polls >= FAST_POLLS:
            delay = min(delay * 1.5, MAX_POLL_S)


async def stream_tar(
    queue: JobQueue, job_id: str, chunk_size: int, start: int, stop: int, max_wait_s: float
) -> AsyncIterator[bytes]:
    """Yield the tar members of samples [start, stop), then the end-of-archive blocks."""
    deadline = time.monotonic() + max_wait_s
    for chunk in range(start // chunk_size, (stop - 1) // chunk_size + 1):
        await _wait_for_chunk(queue, job_id, chunk, deadline)
        tar, offsets = await queue.chunk_result(job_id, chunk)
        first = chunk * chunk_size
        lo = max(start, first) - first
        hi = min(stop, first + len(offsets) - 1) - first
        yield tar[offsets[lo] : offsets[hi]]
    yield TAR_END
