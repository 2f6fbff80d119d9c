"""API keys: who is calling. (What a key may use is in ``service/queue/quotas.py``.)

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
from dataclasses import dataclass
from pathlib import Path

from synthgen.core.errors import Unauthorized
from synthgen.core.jobs import ANONYMOUS_TENANT


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
            return Caller(ANONYMOUS_TENANT)
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
