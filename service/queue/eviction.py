"""A Redis that evicts keys under memory pressure drops queued jobs and results without a word.

At start-up every process reads the server's ``maxmemory-policy``: anything but ``noeviction`` is
reported (a warning), or refused when ``SYNTHGEN_REQUIRE_NOEVICTION`` is on. Managed services that
hide ``CONFIG`` get a warning that the policy could not be checked.
"""

from __future__ import annotations

import logging
from typing import Any

import redis.asyncio as aioredis

log = logging.getLogger(__name__)
SAFE_POLICY = "noeviction"


class EvictingRedis(RuntimeError):
    """The server's maxmemory-policy evicts keys, and the settings ask to refuse such a server."""


async def eviction_policy(client: aioredis.Redis) -> str | None:
    """The server's maxmemory-policy, or None when the server does not let us read it."""
    try:
        reply: Any = await client.config_get("maxmemory-policy")
    except aioredis.ResponseError:  # CONFIG is disabled or renamed on many managed services
        return None
    value = reply.get("maxmemory-policy") if isinstance(reply, dict) else None
    if value is None:
        value = reply.get(b"maxmemory-policy") if isinstance(reply, dict) else None
    return value.decode() if isinstance(value, bytes) else value


async def check_eviction_policy(client: aioredis.Redis, refuse: bool) -> str | None:
    """Warn (or raise EvictingRedis when ``refuse``) unless the server is known not to evict keys."""
    policy = await eviction_policy(client)
    if policy == SAFE_POLICY:
        return policy
    if policy is None:
        log.warning("could not read Redis's maxmemory-policy (CONFIG GET refused); make sure it is 'noeviction'")
        return None
    message = (
        f"Redis's maxmemory-policy is {policy!r}: under memory pressure it evicts keys, and queued jobs and "
        f"results vanish without an error; set it to 'noeviction' (CONFIG SET maxmemory-policy noeviction)"
    )
    if refuse:
        raise EvictingRedis(message + " or unset SYNTHGEN_REQUIRE_NOEVICTION")
    log.warning("%s", message)
    return policy
