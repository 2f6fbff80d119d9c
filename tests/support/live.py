"""Real processes for the reliability tests and the load benchmarks (bench/ uses them too).

``LiveService`` runs a redis-server (append-only file optional), one ``synthgen serve --role api``
process and any number of ``synthgen serve --role worker`` processes on 127.0.0.1, each with its log
in a file. It can kill and restart any of them, and reads their memory (RSS from /proc) and Redis's.
Nothing here is a stand-in: these are the processes an operator runs.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import redis

from service.embedded_redis import EmbeddedRedis
from service.queue import keys as K
from service.queue.connection import connect_sync
from service.queue.jobs import QueueConfig
from service.settings import Settings
from synthgen.core.jobs import Priority
from tests.support.cluster import LocalCluster

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _queue_env(env: dict[str, str]) -> dict[str, str]:
    return {"queue_shards": env["SYNTHGEN_QUEUE_SHARDS"]} if "SYNTHGEN_QUEUE_SHARDS" in env else {}


def in_api_decode_without_worker(with_worker: bool) -> dict[str, str]:
    """Settings for an app started without a worker: it decodes single images itself (no worker would
    ever answer the interactive channel). Tests of the channel start workers and ask for it explicitly."""
    return {} if with_worker else {"interactive_decode": "api"}


def rss_mb(pid: int) -> float:
    """Resident memory of a live process, in MB (0 when it is gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    found = re.search(r"VmRSS:\s+(\d+)", status)
    return int(found.group(1)) / 1024 if found else 0.0


def wait_ready(
    base_url: str, process: subprocess.Popen[bytes] | None, logs: Callable[[], str], what: str, timeout_s: float = 90
) -> None:
    """Wait until ``base_url``/readyz answers 200; fail at once, with the log's tail, if the process exits."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}: {logs()[-2000:]}")
        try:
            if httpx.get(f"{base_url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not become ready in {timeout_s} s")


class LiveService:
    """A redis-server, an api process and worker processes; ``close()`` stops them all."""

    def __init__(
        self,
        env: dict[str, str] | None = None,
        *,
        workers: int = 1,
        appendonly: bool = False,
        log_dir: Path | None = None,
        log_level: str = "WARNING",
        cluster: bool = False,
    ) -> None:
        """``cluster``: run on a real 3-master Redis Cluster on loopback (``tests/support/cluster.py``,
        append-only files on) instead of one redis-server, with every process on the cluster client."""
        self.log_level = log_level
        self.log_dir = Path(log_dir or tempfile.mkdtemp(prefix="synthgen-live-"))
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._clients: list[redis.Redis] = []
        self.cluster = LocalCluster(3) if cluster else None
        self.redis_server = EmbeddedRedis(tempfile.mkdtemp(prefix="sg-redis-"), appendonly=appendonly)
        if self.cluster is not None:
            self.redis_url = self.cluster.url
        else:
            self.redis_url = self.redis_server.start()
            if appendonly:  # nothing acknowledged is lost when the server restarts
                self.redis().config_set("appendfsync", "always")
        # the key layout the processes use (their settings decide it the same way)
        self.keys = QueueConfig.from_settings(Settings(redis_cluster=cluster, **_queue_env(env or {}))).keyspace
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "REDIS_URL": self.redis_url,
            "SYNTHGEN_REDIS_CLUSTER": "true" if cluster else "false",
            "SYNTHGEN_LOG_LEVEL": "warning",
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }
        self.api: subprocess.Popen[bytes] | None = None
        self.workers: list[subprocess.Popen[bytes]] = []
        self.worker_ports: dict[int, int] = {}  # pid -> metrics port
        self._spawned = 0
        try:
            self.start_api()
            for _ in range(workers):
                self.add_worker()
        except BaseException:
            self.close()
            raise

    # processes

    def _spawn(self, role: str, port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
        self._spawned += 1
        log = open(self.log_dir / f"{role}-{self._spawned:03d}.log", "wb")  # noqa: SIM115 (closed with the process)
        cmd = [sys.executable, "-m", "synthgen.cli", "--log-level", self.log_level, "serve", "--role", role, "--port", str(port)]
        try:
            return subprocess.Popen(cmd, env={**self.env, **env}, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        finally:
            log.close()

    def start_api(self, wait: bool = True, **env: str) -> subprocess.Popen[bytes]:
        self.api = self._spawn("api", self.port, env)
        if wait:
            self.wait_ready()
        return self.api

    def kill_api(self, sig: int = signal.SIGKILL) -> None:
        if self.api is not None and self.api.poll() is None:
            self.api.send_signal(sig)
            self.api.wait(30)

    def add_worker(self, **env: str) -> subprocess.Popen[bytes]:
        port = free_port()
        process = self._spawn("worker", port, env)
        self.workers.append(process)
        self.worker_ports[process.pid] = port
        return process

    def kill_worker(self, process: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
        if process.poll() is None:
            process.send_signal(sig)
        process.wait(30)
        self.workers.remove(process)

    def wait_ready(self, timeout_s: float = 90) -> None:
        wait_ready(self.base_url, self.api, lambda: self.logs("api"), "the api", timeout_s)

    def wait_workers(self, count: int | None = None, timeout_s: float = 90) -> None:
        """Wait until ``count`` (default: all) worker processes have written their heartbeat."""
        want = len(self.workers) if count is None else count
        deadline = time.monotonic() + timeout_s
        client = self.redis()
        while len(list(client.scan_iter(match=f"{K.WORKER_HEALTH_PREFIX}*"))) < want:
            dead = [w for w in self.workers if w.poll() is not None]
            if dead:
                raise RuntimeError(f"a worker exited with {dead[0].returncode}: {self.logs('worker')[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{want} workers did not start in {timeout_s} s")
            time.sleep(0.05)

    def stop_redis(self) -> None:
        self.redis_server.stop(keep_data=True)

    def start_redis(self) -> None:
        self.redis_server.start()

    def close(self) -> None:
        processes = [p for p in [self.api, *self.workers] if p is not None]
        for process in processes:
            if process.poll() is None:
                process.terminate()
        for process in processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        for client in self._clients:
            client.close()
        self.redis_server.stop()
        if self.cluster is not None:
            self.cluster.close()

    def __enter__(self) -> LiveService:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # observation

    def redis(self) -> redis.Redis:
        """A client of the service's Redis (a cluster client on a cluster: same commands, routed by slot)."""
        client = connect_sync(self.redis_url, self.cluster is not None, socket_timeout=10)
        self._clients.append(client)
        return client

    def queued_images(self) -> int:
        """Images counted as queued, over every shard."""
        client = self.redis()
        return sum(int(client.get(self.keys.queued_images(s)) or 0) for s in range(self.keys.shards))

    def redis_used_mb(self) -> float:
        return float(self.redis().info("memory")["used_memory"]) / 1e6

    def api_rss_mb(self) -> float:
        return rss_mb(self.api.pid) if self.api is not None else 0.0

    def worker_rss_mb(self) -> list[float]:
        return [rss_mb(w.pid) for w in self.workers]

    def images_generated(self) -> float:
        """Images the live workers have generated, from their Prometheus metrics."""
        total = 0.0
        for worker in self.workers:
            try:
                text = httpx.get(f"http://127.0.0.1:{self.worker_ports[worker.pid]}/metrics", timeout=5).text
            except httpx.HTTPError:
                continue
            total += sum(float(v) for v in re.findall(r"^synthgen_images_generated_total\{[^}]*\} (\S+)$", text, re.M))
        return total

    def logs(self, role: str = "") -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.log_dir.glob(f"{role}*.log")))


def iter_key_ttls(client: redis.Redis, match: str = f"{K.PREFIX}:*") -> Iterator[tuple[str, int]]:
    """Every key under the prefix with its TTL in seconds (-1: none)."""
    for key in client.scan_iter(match=match, count=1000):
        yield key.decode(), int(client.ttl(key))


# Keys that live as long as the deployment, by design: the two streams of each shard (and their group), the
# counters that admission control and the redelivery metric read, collections (kept across jobs on purpose),
# and the key layout every process checks at start-up.
PERMANENT_KEYS = re.compile(
    rf"^{K.PREFIX}:(\{{s\d+\}}:)?(stream:(interactive|bulk)|stats:queued_images|collection:[^:]+:[^:]+)$"
    rf"|^{K.REDELIVERIES_KEY}$|^{K.LAYOUT_KEY}$"
)


def leaked_keys(client: redis.Redis) -> list[str]:
    """Keys that will never expire and are not among the permanent ones."""
    return sorted(key for key, ttl in iter_key_ttls(client) if ttl == -1 and not PERMANENT_KEYS.match(key))


class StandaloneServe:
    """``synthgen serve`` as the README runs it: one process (api and worker) on its embedded Redis, whose
    append-only file lives in ``data_dir``. It can be killed and started again on the same folder."""

    def __init__(self, data_dir: Path, env: dict[str, str] | None = None, log_dir: Path | None = None) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_dir = Path(log_dir or tempfile.mkdtemp(prefix="synthgen-standalone-"))
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
        self.env.update({"SYNTHGEN_DATA_DIR": str(data_dir), "PYTHONUNBUFFERED": "1", **(env or {})})
        self.process: subprocess.Popen[bytes] | None = None
        self._starts = 0

    def start(self, wait: bool = True, **env: str) -> subprocess.Popen[bytes]:
        self._starts += 1
        log = open(self.log_dir / f"serve-{self._starts:03d}.log", "wb")  # noqa: SIM115 (closed with the process)
        cmd = [sys.executable, "-m", "synthgen.cli", "--log-level", "WARNING", "serve", "--port", str(self.port)]
        try:
            self.process = subprocess.Popen(cmd, env={**self.env, **env}, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        finally:
            log.close()
        if wait:
            self.wait_ready()
        return self.process

    def wait_ready(self, timeout_s: float = 90) -> None:
        wait_ready(self.base_url, self.process, self.logs, "synthgen serve", timeout_s)

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 120) -> float:
        """Send ``sig`` and wait for the process to exit; returns the seconds it took."""
        started = time.monotonic()
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(timeout_s)
        return time.monotonic() - started

    def close(self) -> None:
        """Stop the process and any redis-server a SIGKILL left behind on the data folder."""
        self.stop(signal.SIGKILL)
        pid_file = self.data_dir / "redis" / "redis-server.pid"
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(pid_file.read_text().strip()), signal.SIGKILL)

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.log_dir.glob("serve-*.log")))


def held_by_pid(service: LiveService, client: redis.Redis) -> dict[int, int]:
    """Unacknowledged work items per worker process (consumers are named host-pid), over every shard."""
    held: dict[int, int] = {}
    for shard in range(service.keys.shards):
        stream = service.keys.stream(shard, Priority.BULK)
        if not client.exists(stream):
            continue
        for c in client.xinfo_consumers(stream, K.WORKER_GROUP):
            pid = int(c["name"].decode().rsplit("-", 1)[1])
            held[pid] = held.get(pid, 0) + int(c["pending"])
    return held


def busiest_worker(service: LiveService, client: redis.Redis, rng: random.Random) -> tuple[subprocess.Popen[bytes], int]:
    """The worker process holding the most unacknowledged work items."""
    held = held_by_pid(service, client)
    live = list(service.workers)
    rng.shuffle(live)
    victim = max(live, key=lambda w: held.get(w.pid, 0))
    return victim, held.get(victim.pid, 0)
