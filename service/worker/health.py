"""The worker liveness check behind ``synthgen health --worker`` (a Kubernetes exec probe)."""

from __future__ import annotations

import socket
import time

import redis

from service.queue import keys as K
from service.queue.connection import connect_sync
from service.settings import get_settings


def check_worker_health(max_age_s: float = 30.0, name: str | None = None) -> tuple[bool, str]:
    """True when a worker of this host (or the named one) wrote its health key within max_age_s."""
    settings = get_settings()
    if not settings.redis_url:
        return False, "REDIS_URL is not set: no shared Redis to read worker health from"
    try:
        client = connect_sync(settings.redis_url, settings.redis_cluster)
    except redis.RedisError as exc:
        return False, f"redis unreachable: {exc}"
    try:
        pattern = K.worker_health_key(name) if name else K.worker_health_key(f"{socket.gethostname()}-*")
        keys = list(client.scan_iter(match=pattern, count=100))
        stamps = [client.get(key) for key in keys]
    except redis.RedisError as exc:
        return False, f"redis unreachable: {exc}"
    finally:
        client.close()
    ages = [time.time() - float(s) for s in stamps if s is not None]
    if not ages:
        return False, f"no worker heartbeat matching {pattern}"
    youngest = min(ages)
    if youngest > max_age_s:
        return False, f"newest heartbeat is {youngest:.1f} s old (max {max_age_s} s)"
    return True, f"worker alive: heartbeat {youngest:.1f} s ago"
