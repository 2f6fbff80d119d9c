"""Redis clients from the settings: a plain client, or redis-py's cluster client on Redis Cluster.

With ``SYNTHGEN_REDIS_CLUSTER=true``, ``REDIS_URL`` names any node of the cluster: the client reads the
slot map from it and follows MOVED and ASK redirections by itself. The rest of the code is written
against the plain client's command API; every command and script it sends names keys of one slot (see
``service/queue/keys.py``), which is what the cluster client needs to route it.
"""

from __future__ import annotations

from typing import cast

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster


def connect(url: str, cluster: bool = False, *, socket_timeout: float = 10, connect_timeout: float = 5) -> aioredis.Redis:
    """An async client of ``url``; a cluster client when ``cluster``."""
    if cluster:
        client = AsyncRedisCluster.from_url(url, socket_timeout=socket_timeout, socket_connect_timeout=connect_timeout)
        # The cluster client has the same command methods as the plain one (routed by key slot).
        return cast(aioredis.Redis, client)
    return aioredis.from_url(url, socket_timeout=socket_timeout, socket_connect_timeout=connect_timeout, health_check_interval=15)


def connect_sync(url: str, cluster: bool = False, *, socket_timeout: float = 5) -> redis.Redis:
    """A blocking client (the health probe, tools); a cluster client when ``cluster``."""
    if cluster:
        return cast(redis.Redis, RedisCluster.from_url(url, socket_timeout=socket_timeout, socket_connect_timeout=5))
    return redis.Redis.from_url(url, socket_timeout=socket_timeout, socket_connect_timeout=5)
