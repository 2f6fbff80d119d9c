"""The soak run behind bench/bench_soak.py (its docstring describes the run) and tests/test_load.py."""

from __future__ import annotations

import statistics
import threading
import time
from dataclasses import dataclass, field

import httpx

from service.queue import keys as K
from synthgen.client import TarSampleReader
from tests.support.jobs import wait_job
from tests.support.live import PERMANENT_KEYS, LiveService, iter_key_ttls, leaked_keys


@dataclass
class Point:
    at: float
    images: int  # received by the clients so far
    api_rss_mb: float
    worker_rss_mb: list[float]
    redis_mb: float


@dataclass
class SoakReport:
    images: int
    job_size: int
    images_done: int = 0
    jobs: int = 0
    failed: int = 0
    lost: int = 0
    retries_429: int = 0
    seconds: float = 0.0
    points: list[Point] = field(default_factory=list)
    keys_after_ttl: dict[str, int] | None = None  # key -> ttl, after every job expired
    leaked_after_ttl: list[str] | None = None
    redis_mb_after_ttl: float | None = None

    def rss_series(self) -> dict[str, list[float]]:
        series = {"api": [p.api_rss_mb for p in self.points]}
        for i in range(min((len(p.worker_rss_mb) for p in self.points), default=0)):
            series[f"worker{i}"] = [p.worker_rss_mb[i] for p in self.points]
        return series

    def rss_growth_mb(self) -> float:
        """The largest growth of any process: median of the last fifth of the samples less that of the
        second fifth (the first is warm-up)."""
        growth = 0.0
        for values in self.rss_series().values():
            fifth = max(1, len(values) // 5)
            if len(values) >= 5:
                growth = max(growth, statistics.median(values[-fifth:]) - statistics.median(values[fifth : 2 * fifth]))
        return growth


def _stream(http: httpx.Client, job_id: str) -> int:
    """Stream a job's result, checking sample order; returns the number of samples received."""
    reader = TarSampleReader(0)
    received = 0
    with http.stream("GET", f"/v1/jobs/{job_id}/result", timeout=600) as response:
        response.raise_for_status()
        for block in response.iter_bytes(1 << 18):
            received += len(reader.feed(block))
    if not reader.ended:
        raise RuntimeError(f"job {job_id}: the result ended without its end-of-archive blocks")
    return received


def soak_env(ttl_s: int = 60) -> dict[str, str]:
    """Settings for a soak: a short TTL and no expired retention, so that the run can wait past them."""
    return {
        "SYNTHGEN_RESULT_TTL_S": str(ttl_s),
        "SYNTHGEN_EXPIRED_RETENTION_S": "0",
        # the result budget counts bytes per 10-minute expiry bucket: with a 60 s TTL it would over-count
        # ten times over and refuse work that fits, so it is lifted here (memory is what this run watches)
        "SYNTHGEN_MAX_RESULT_BYTES": str(64 * 1024**3),
    }


def run(
    service: LiveService, images: int, job_size: int = 10_000, clients: int = 2, sample_every_s: float = 5.0,
    fmt: str = "png", wait_ttl: bool = False,
) -> SoakReport:  # fmt: skip
    report = SoakReport(images, job_size)
    lock = threading.Lock()
    remaining = [images]
    t0 = time.monotonic()
    done = threading.Event()

    def client(c: int) -> None:
        with httpx.Client(base_url=service.base_url, timeout=60) as http:
            while True:
                with lock:
                    count = min(job_size, remaining[0])
                    remaining[0] -= count
                    seed = report.jobs
                    report.jobs += 1 if count else 0
                if count <= 0:
                    return
                while (response := http.post("/v1/jobs", json={"count": count, "seed": seed, "format": fmt})).status_code == 429:
                    with lock:
                        report.retries_429 += 1
                    time.sleep(float(response.headers.get("retry-after", "1")))
                response.raise_for_status()
                job_id = response.json()["id"]
                received = _stream(http, job_id)
                status = http.get(f"/v1/jobs/{job_id}").json()["status"]
                with lock:
                    report.images_done += received
                    report.lost += count - received
                    report.failed += status != "succeeded"

    def monitor() -> None:
        redis = service.redis()
        while not done.wait(sample_every_s):
            point = Point(
                time.monotonic() - t0, report.images_done, service.api_rss_mb(), service.worker_rss_mb(),
                float(redis.info("memory")["used_memory"]) / 1e6,
            )  # fmt: skip
            report.points.append(point)

    sampler = threading.Thread(target=monitor, daemon=True)
    sampler.start()
    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    report.seconds = time.monotonic() - t0
    done.set()
    sampler.join()
    if wait_ttl:
        wait_past_expiry(service, report)
    return report


def wait_past_expiry(service: LiveService, report: SoakReport, margin_s: float = 5.0) -> None:
    """Sleep until the last job's results and its hash have expired, then record what Redis holds."""
    client = service.redis()
    latest = 0.0
    for key in client.scan_iter(match=f"{K.PREFIX}:job:*", count=1000):
        ttl = client.ttl(key)
        latest = max(latest, float(ttl))
    print(f"waiting {latest + margin_s:.0f} s for the last job to expire")
    time.sleep(latest + margin_s)
    with httpx.Client(base_url=service.base_url, timeout=30) as http:  # one last request: all is still served
        probe = http.post("/v1/jobs", json={"count": 1, "seed": 1}).json()
        wait_job(http, probe["id"], lambda j: j["status"] == "succeeded")
    report.keys_after_ttl = {
        key: ttl for key, ttl in iter_key_ttls(client) if not key.startswith(f"{K.PREFIX}:job:{probe['id']}")
        and not key.startswith(f"{K.PREFIX}:result:{probe['id']}")
    }  # fmt: skip
    report.leaked_after_ttl = leaked_keys(client)
    report.redis_mb_after_ttl = float(client.info("memory")["used_memory"]) / 1e6


def describe(report: SoakReport) -> str:
    rate = report.images_done / report.seconds if report.seconds else 0.0
    lines = [
        f"{report.images_done} of {report.images} images in {report.jobs} jobs of {report.job_size} "
        f"in {report.seconds:.0f} s ({rate:.0f} images/s): lost {report.lost}, failed jobs {report.failed}, "
        f"429 retries {report.retries_429}",
        f"largest RSS growth (median of the last fifth less the second fifth): {report.rss_growth_mb():.1f} MB",
    ]
    for name, values in report.rss_series().items():
        if values:
            lines.append(f"  {name} RSS MB: start {values[0]:.0f}, max {max(values):.0f}, end {values[-1]:.0f}")
    redis = [p.redis_mb for p in report.points]
    if redis:
        lines.append(f"  redis used_memory MB: start {redis[0]:.0f}, max {max(redis):.0f}, end {redis[-1]:.0f}")
    if report.keys_after_ttl is not None:
        temporary = {k: t for k, t in report.keys_after_ttl.items() if not PERMANENT_KEYS.match(k)}
        lines.append(
            f"after the TTL: {len(report.keys_after_ttl)} keys, {len(temporary)} of them short-lived statistics or health "
            f"keys that expire by themselves ({sorted(temporary)[:6]}...), leaked {report.leaked_after_ttl}, "
            f"redis used_memory {report.redis_mb_after_ttl:.1f} MB"
        )
    return "\n".join(lines)
