"""The queue's gauges (depth per priority, queued images, stored result bytes, drain rate), read on scrape."""

from __future__ import annotations

import logging

from service.queue.admission import read_stats
from service.queue.streams import JobQueue
from service.telemetry import instruments as M

log = logging.getLogger(__name__)


async def refresh_queue_gauges(queue: JobQueue, result_ttl_s: int) -> None:
    """Set the gauges from Redis; when Redis is down they keep their last values and /metrics is still served."""
    try:
        for priority, depth in (await queue.depth()).items():
            M.QUEUE_LAG.labels(priority).set(depth["lag"])
            M.QUEUE_PENDING.labels(priority).set(depth["pending"])
        stats = await read_stats(queue.redis, result_ttl_s, keys=queue.keys)
        M.QUEUED_IMAGES.set(stats.queued_images)
        M.RESULT_BYTES_STORED.set(stats.result_bytes)
        M.DRAIN_RATE.set(stats.drain_rate)
    except Exception as exc:  # metrics must still be served when Redis is down
        log.warning("queue depth unavailable: %s", exc)
