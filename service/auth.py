"""API keys and per-key quotas.

Keys come from ``SYNTHGEN_API_KEYS`` (comma- or newline-separated) and/or the file named by
``SYNTHGEN_API_KEYS_FILE`` (a mounted secret, one key per line). Only their sha256 digests are kept
in memory, and a presented key is compared with every stored digest with ``hmac.compare_digest``,
so the time taken does not depend on which key matched or how much of it did. A key's identity (its
tenant) is the first 16 hex digits of its digest: that is what owns jobs and what quotas count, and
the key itself never appears in a log line, a metric label or Redis.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from service import constants as K
from service.errors import QuotaExceeded, Unauthorized

ANONYMOUS = "anonymous"


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def parse_keys(text: str) -> list[str]:
    return [k.strip() for k in text.replace(",", "\n").splitlines() if k.strip()]


@dataclass(frozen=True)
class Caller:
    tenant: str
    read_only: bool = False


@dataclass(frozen=True)
class KeyRing:
    digests: tuple[bytes, ...]
    read_only: frozenset[bytes] = frozenset()  # keys that may read but not create or cancel

    @classmethod
    def load(cls, keys: str, keys_file: Path | None, read_only_keys: str = "") -> KeyRing:
        viewers = parse_keys(read_only_keys)
        found = parse_keys(keys) + viewers
        if keys_file is not None:
            try:
                found += parse_keys(keys_file.read_text(encoding="utf-8"))
            except OSError as exc:
                raise ValueError(f"SYNTHGEN_API_KEYS_FILE {keys_file}: cannot read it ({exc.strerror})") from exc
        short = [i for i, k in enumerate(found) if len(k) < 8]
        if short:
            raise ValueError(f"API keys must be at least 8 characters; key number(s) {[i + 1 for i in short]} are shorter")
        return cls(tuple(_digest(k) for k in found), frozenset(_digest(k) for k in viewers))

    @property
    def enabled(self) -> bool:
        return bool(self.digests)

    def identify(self, authorization: str | None) -> str:
        """The tenant id of a ``Bearer`` key, or raise Unauthorized. Anonymous when no keys are set."""
        return self.caller(authorization).tenant

    def caller(self, authorization: str | None) -> Caller:
        """Who is calling (tenant and whether the key is read-only), or raise Unauthorized."""
        if not self.enabled:
            return Caller(ANONYMOUS)
        scheme, _, presented = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            raise Unauthorized("expected an 'Authorization: Bearer <api key>' header")
        digest = _digest(presented.strip())
        match = b""
        for stored in self.digests:  # every digest is compared: no early exit
            if hmac.compare_digest(stored, digest):
                match = stored
        if not match:
            raise Unauthorized("the API key is not valid")
        return Caller(match.hex()[:16], match in self.read_only)


@dataclass(frozen=True)
class Quotas:
    images_per_day: int  # 0: unlimited
    concurrent_jobs: int  # 0: unlimited


def _day() -> str:
    return time.strftime("%Y%m%d", time.gmtime())


def _seconds_to_midnight() -> int:
    now = time.time()
    return int(86_400 - now % 86_400) + 1


async def charge(client: aioredis.Redis, tenant: str, quotas: Quotas, count: int) -> None:
    """Count ``count`` images against the tenant's daily quota, or raise QuotaExceeded (nothing counted)."""
    if quotas.images_per_day:
        key = K.quota_images_key(tenant, _day())
        used = int(await client.incrby(key, count))
        await client.expire(key, 2 * 86_400)
        if used > quotas.images_per_day:
            await client.decrby(key, count)
            retry = _seconds_to_midnight()
            raise QuotaExceeded(
                f"this key may generate {quotas.images_per_day} images a day; {used - count} are used and this job "
                f"asks for {count}; the quota resets at 00:00 UTC",
                retry,
                {"quota": "images_per_day", "limit": quotas.images_per_day, "used": used - count},
            )


async def refund(client: aioredis.Redis, tenant: str, quotas: Quotas, count: int) -> None:
    """Give back images counted for a job that was then refused (queue full)."""
    if quotas.images_per_day:
        await client.decrby(K.quota_images_key(tenant, _day()), count)


async def check_concurrency(client: aioredis.Redis, tenant: str, quotas: Quotas) -> None:
    """Raise QuotaExceeded when the tenant already has its maximum of unfinished jobs."""
    if not quotas.concurrent_jobs:
        return
    key = K.tenant_jobs_key(tenant)
    members: Any = await client.smembers(key)
    job_ids = [m.decode() for m in members]
    async with client.pipeline(transaction=False) as pipe:  # one round trip for all of them
        for job_id in job_ids:
            pipe.hmget(K.job_key(job_id), ["status", "expires_at"])
        states: list[Any] = await pipe.execute()
    active, finished_ids = 0, []
    for job_id, (status, expires_at) in zip(job_ids, states, strict=True):
        if status is None or status.decode() not in ("queued", "running") or time.time() >= float(expires_at):
            finished_ids.append(job_id)
        else:
            active += 1
    if finished_ids:
        await client.srem(key, *finished_ids)
    if active >= quotas.concurrent_jobs:
        raise QuotaExceeded(
            f"this key may run {quotas.concurrent_jobs} jobs at once and has {active} unfinished; "
            "wait for one to finish or cancel one",
            5,
            {"quota": "concurrent_jobs", "limit": quotas.concurrent_jobs, "active": active},
        )


async def register_job(client: aioredis.Redis, tenant: str, job_id: str, ttl_s: int) -> None:
    key = K.tenant_jobs_key(tenant)
    await client.sadd(key, job_id)
    await client.expire(key, ttl_s)
