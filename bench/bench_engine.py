"""The serving engine against the ceiling of this machine, all measured in one run.

1. ceiling: one process, no queue, no HTTP: decode and encode with every core (and the CPU split
   between onnxruntime threads and encoder threads);
2. service bulk: one job through HTTP (api process + worker processes + Redis), downloaded as a tar;
3. interactive: 32 concurrent clients fetching single images, alone and during a bulk job (p50, p99);
4. batch fill at saturation, and the latency a lone 1-image job pays over a direct decode;
5. scaling: 1 vs 2 worker processes, and the cost of one chunk;
6. memory: worker RSS at the start and end of a long run, and Redis memory against result bytes.

    python bench/bench_engine.py                  # quick: 20,000-image bulk job, 50,000-image memory run
    python bench/bench_engine.py --memory-count 200000
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import numpy as np
import redis

from bench.bench_serving import interactive as interactive_load
from service.embedded_redis import EmbeddedRedis
from service.engine.registry import ModelRegistry
from service.engine.rendering import RenderSpec, encode_samples
from service.engine.sessions import open_session, pick_providers
from service.settings import get_settings

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ceiling(count: int, fmt: str, ort_threads: int, encode_threads: int, batch: int = 64) -> float:
    """Images/s of decode + encode in one process, encoding batch k while batch k+1 decodes."""
    settings = get_settings()
    registry = ModelRegistry.from_directory(settings.models_dir, settings.default_model)
    model = registry.default
    model.session = open_session(model.package, pick_providers("auto"), ort_threads)
    spec = RenderSpec(seed=0, fmt=fmt)
    started = time.perf_counter()
    with ThreadPoolExecutor(encode_threads) as pool:
        pending = []
        for start in range(0, count, batch):
            indices = np.arange(start, min(count, start + batch))
            rows = model.inputs(0, indices)
            images = model.decode(rows)
            # as many encode tasks as threads, so every encoder thread has work
            for part in np.array_split(np.arange(len(indices)), encode_threads):
                pending.append(pool.submit(encode_samples, model, spec, indices[part], rows[part], images[part]))
            while len(pending) > 4 * encode_threads:
                pending.pop(0).result()
        for future in pending:
            future.result()
    return count / (time.perf_counter() - started)


class Service:
    """An embedded redis-server, one api process and N worker processes, on 127.0.0.1."""

    def __init__(self, workers: int, env: dict[str, str]) -> None:
        self.redis = EmbeddedRedis()
        self.url = self.redis.start()
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "REDIS_URL": self.url, **env}
        self.api = self._spawn("api", self.port)
        self.worker_ports = [free_port() for _ in range(workers)]
        self.workers = [self._spawn("worker", p) for p in self.worker_ports]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.base}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError("the service did not become ready")

    def _spawn(self, role: str, port: int) -> subprocess.Popen[bytes]:
        cmd = [sys.executable, "-m", "synthgen.cli", "--log-level", "WARNING", "serve", "--role", role, "--port", str(port)]
        return subprocess.Popen(cmd, env=self.env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def close(self) -> None:
        for process in [self.api, *self.workers]:
            process.terminate()
        for process in [self.api, *self.workers]:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
        self.redis.stop()

    def worker_metric(self, name: str) -> float:
        total = 0.0
        for port in self.worker_ports:
            text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
            total += sum(float(v) for v in re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M))
        return total

    def rss_mb(self) -> list[float]:
        out = []
        for process in self.workers:
            status = Path(f"/proc/{process.pid}/status").read_text()
            out.append(int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024)  # type: ignore[union-attr]
        return out


def run_job(base: str, count: int, fmt: str = "png", seed: int = 0) -> tuple[float, int]:
    """POST a job and stream its tar to nowhere; returns (images/s from POST to last byte, tar bytes)."""
    started = time.perf_counter()
    job = httpx.post(f"{base}/v1/jobs", json={"count": count, "seed": seed, "format": fmt}, timeout=30).json()
    size = 0
    with httpx.stream("GET", f"{base}/v1/jobs/{job['id']}/result", timeout=None) as response:
        for block in response.iter_bytes(1 << 20):
            size += len(block)
    return count / (time.perf_counter() - started), size


def interactive(base: str, clients: int = 32, per_client: int = 8) -> tuple[float, float, float]:
    """p50 and p99 latency (ms) of single-image requests, and images/s, with `clients` concurrent clients."""
    per_second, latencies = interactive_load(base, clients, per_client, ext="png", first_seed=1000)
    p50, p99 = np.quantile(latencies, [0.5, 0.99]) * 1000
    return float(p50), float(p99), per_second


def lone_job_latency(base: str, repeats: int = 21) -> tuple[float, float, float]:
    """Median ms of: a 1-image job from POST to the last byte; the same two requests on a finished job
    (HTTP and API cost alone); and decoding plus encoding one image directly in this process."""
    settings = get_settings()
    model = ModelRegistry.from_directory(settings.models_dir, settings.default_model).default
    spec = RenderSpec(seed=0)
    lone, floor, direct = [], [], []
    with httpx.Client(timeout=60) as http:
        for i in range(repeats):
            started = time.perf_counter()
            job = http.post(f"{base}/v1/jobs", json={"count": 1, "seed": 50 + i}).json()
            http.get(f"{base}/v1/jobs/{job['id']}/result").raise_for_status()
            lone.append(time.perf_counter() - started)
            started = time.perf_counter()
            http.get(f"{base}/v1/jobs/{job['id']}")
            http.get(f"{base}/v1/jobs/{job['id']}/result").raise_for_status()
            floor.append(time.perf_counter() - started)
            started = time.perf_counter()
            indices = np.array([i])
            rows = model.inputs(0, indices)
            encode_samples(model, spec, indices, rows, model.decode(rows))
            direct.append(time.perf_counter() - started)
    return statistics.median(lone) * 1000, statistics.median(floor) * 1000, statistics.median(direct) * 1000


def memory_run(count: int, env: dict[str, str]) -> None:
    memory = Service(1, {**env, "SYNTHGEN_RESULT_TTL_S": "600"})
    try:
        run_job(memory.base, 2000, "jpeg")
        rss_start = memory.rss_mb()[0]
        rate, size = run_job(memory.base, count, "jpeg", seed=3)
        rss_end = memory.rss_mb()[0]
        info = redis.Redis.from_url(memory.url).info("memory")
        print(f"\n6. memory over {count} jpeg images ({rate:.0f} images/s): worker RSS {rss_start:.0f} MB -> {rss_end:.0f} MB; "
              f"redis used_memory {info['used_memory'] / 1e6:.0f} MB for {size / 1e6:.0f} MB of results")  # fmt: skip
    finally:
        memory.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=20000, help="images in the ceiling and bulk runs")
    parser.add_argument("--memory-count", type=int, default=50000, help="images in the memory run")
    parser.add_argument("--format", default="png")
    parser.add_argument("--memory-only", action="store_true", help="run only section 6")
    args = parser.parse_args()
    if args.memory_only:
        memory_run(args.memory_count, {"SYNTHGEN_LOG_LEVEL": "warning"})
        return
    cores = os.cpu_count() or 1
    print(f"{cores} cores; model {get_settings().default_model}; format {args.format}")

    print("\n1. ceiling (one process, no queue, no HTTP), images/s by onnxruntime threads x encoder threads")
    splits = sorted({(1, 1), (1, cores), (cores, 1), (max(1, cores // 2), max(1, cores // 2)), (cores, cores)})
    rates = {split: ceiling(args.count // 4, args.format, *split) for split in splits}
    for (o, e), rate in rates.items():
        print(f"   ort {o} x encode {e}: {rate:8.0f} images/s")
    ceiling_rate = max(rates.values())
    best = max(rates, key=lambda s: rates[s])
    print(f"   ceiling: {ceiling_rate:.0f} images/s at ort {best[0]} x encode {best[1]}; the service runs with that split")
    env = {"SYNTHGEN_ORT_THREADS": str(best[0]), "SYNTHGEN_ENCODE_THREADS": str(best[1]), "SYNTHGEN_LOG_LEVEL": "warning"}

    service = Service(1, env)
    try:
        run_job(service.base, 500, args.format)  # warm-up
        fill_before = (
            service.worker_metric("synthgen_batch_fill_ratio_sum"),
            service.worker_metric("synthgen_batch_fill_ratio_count"),
        )
        bulk_rate, tar_bytes = run_job(service.base, args.count, args.format, seed=1)
        fills = service.worker_metric("synthgen_batch_fill_ratio_sum") - fill_before[0]
        batches = service.worker_metric("synthgen_batch_fill_ratio_count") - fill_before[1]
        print(f"\n2. service bulk, 1 worker: {bulk_rate:.0f} images/s = {bulk_rate / ceiling_rate:.2f}x the ceiling "
              f"({tar_bytes / 1e6:.0f} MB of tar)")  # fmt: skip
        print(f"\n4. batch fill at saturation: {fills / max(batches, 1):.2f} of B over {batches:.0f} batches")
        alone = interactive(service.base)
        bulk_thread = threading.Thread(target=run_job, args=(service.base, args.count, args.format, 2))
        bulk_thread.start()
        time.sleep(1.0)
        during = interactive(service.base)
        bulk_thread.join()
        print("\n3. interactive, 32 clients x 8 single images")
        print(f"   alone:       p50 {alone[0]:7.1f} ms  p99 {alone[1]:7.1f} ms  {alone[2]:6.0f} images/s")
        print(f"   during bulk: p50 {during[0]:7.1f} ms  p99 {during[1]:7.1f} ms  {during[2]:6.0f} images/s"
              f"  (p99 ratio {during[1] / alone[1]:.2f}x)")  # fmt: skip
        lone, floor, direct = lone_job_latency(service.base)
        wait_ms = get_settings().batch_wait_ms
        added = lone - floor - direct
        print(f"   a lone 1-image job, POST to last byte: median {lone:.1f} ms = {floor:.1f} ms of HTTP/API requests "
              f"+ {direct:.1f} ms to decode and encode + {added:.1f} ms added by queue and batching (W = {wait_ms} ms)")  # fmt: skip
    finally:
        service.close()

    # two processes share the cores: each gets half of the split
    half = {"SYNTHGEN_ORT_THREADS": str(max(1, best[0] // 2)), "SYNTHGEN_ENCODE_THREADS": str(max(1, best[1] // 2))}
    two = Service(2, {**env, **half})
    try:
        run_job(two.base, 500, args.format)
        two_rate, _ = run_job(two.base, args.count, args.format, seed=1)
    finally:
        two.close()
    chunk = get_settings().chunk_size
    print(f"\n5. scaling: 2 worker processes {two_rate:.0f} images/s = {two_rate / bulk_rate:.2f}x one worker; "
          f"one chunk of {chunk} images costs {chunk / bulk_rate * 1000:.0f} ms of one worker")  # fmt: skip

    memory_run(args.memory_count, env)


if __name__ == "__main__":
    main()
