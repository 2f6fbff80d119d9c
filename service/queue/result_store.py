"""Where a chunk's tar blocks live: in Redis next to its offsets (default), or in a directory (a volume).

Either way the chunk's offsets and its "done" mark are in Redis, written by the completion script, so a
chunk is served only once it is complete. A directory store writes each chunk to a temporary file and
renames it into place, so a reader never sees a partial chunk, even after a crash or a full disk.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import shutil
import time
from pathlib import Path

from synthgen.core.files import write_atomically

log = logging.getLogger(__name__)


class ResultStoreFull(OSError):
    """The result directory has no room left for a chunk."""


class RedisResultStore:
    """The tar blocks go into the chunk's result hash, through the completion script."""

    async def write(self, job_id: str, chunk: int, tar: bytes, expires_at: float) -> bytes:
        return tar  # handed to the completion script, which stores it

    async def read(self, job_id: str, chunk: int, stored: bytes | None) -> bytes | None:
        return stored

    async def sweep(self, now: float) -> int:
        return 0  # Redis expires results by itself


class DirectoryResultStore:
    """``{root}/{job_id}/{chunk:08d}.tar``; a job's folder is removed once it has expired."""

    EXPIRY_FILE = ".expires_at"

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, job_id: str, chunk: int) -> Path:
        return self.root / job_id / f"{chunk:08d}.tar"

    def _write_sync(self, job_id: str, chunk: int, tar: bytes, expires_at: float) -> None:
        path = self._path(job_id, chunk)
        try:  # every write, the job's folder and expiry file included, can meet a full disk
            path.parent.mkdir(exist_ok=True)
            expiry = path.parent / self.EXPIRY_FILE
            if not expiry.exists():
                write_atomically(expiry, f"{expires_at:.0f}\n".encode())
            write_atomically(path, tar)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise ResultStoreFull(exc.errno, f"result directory {self.root} is full: {exc.strerror}") from exc
            raise

    async def write(self, job_id: str, chunk: int, tar: bytes, expires_at: float) -> bytes:
        await asyncio.to_thread(self._write_sync, job_id, chunk, tar, expires_at)
        return b""  # nothing for Redis to store but the offsets

    async def read(self, job_id: str, chunk: int, stored: bytes | None) -> bytes | None:
        path = self._path(job_id, chunk)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            return None

    def _sweep_sync(self, now: float) -> int:
        removed = 0
        for folder in self.root.iterdir():
            expiry = folder / self.EXPIRY_FILE
            try:
                expired = float(expiry.read_text()) <= now
            except (OSError, ValueError):
                continue
            if expired:
                shutil.rmtree(folder, ignore_errors=True)
                removed += 1
        return removed

    async def sweep(self, now: float | None = None) -> int:
        """Remove the folders of expired jobs; returns how many."""
        return await asyncio.to_thread(self._sweep_sync, time.time() if now is None else now)


ResultStore = RedisResultStore | DirectoryResultStore


def make_result_store(spec: str) -> ResultStore:
    """``redis``, or ``dir:/path/to/volume``."""
    if spec == "redis":
        return RedisResultStore()
    if spec.startswith("dir:") and len(spec) > 4:
        return DirectoryResultStore(Path(spec[4:]))
    raise ValueError(f"result store must be 'redis' or 'dir:/path', got {spec!r}")
