"""The overload run behind bench/bench_overload.py (its docstring describes the run) and tests/test_load.py."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from service.queue import keys as K
from tests.support.jobs import wait_job
from tests.support.live import LiveService


@dataclass
class Sent:
    phase: str
    at: float  # seconds since the run started, when the request was sent
    status: int  # 0: a connection error
    retry_after: bool
    job_id: str = ""


@dataclass
class Sample:
    at: float
    images: float  # images generated so far, over the live workers
    api_rss_mb: float
    worker_rss_mb: float  # the largest worker
    redis_mb: float
    queued_images: int
    result_bytes: int


@dataclass
class Report:
    job_size: int
    factor: float
    clients: int
    capacity_images_per_s: float = 0.0
    sustainable_jobs_per_s: float = 0.0
    phases: dict[str, tuple[float, float]] = field(default_factory=dict)  # name -> (start, end)
    sent: list[Sent] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)


class Monitor(threading.Thread):
    """Samples throughput and memory every ``period_s`` until stopped."""

    def __init__(self, service: LiveService, t0: float, report: Report, period_s: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.service, self.t0, self.report, self.period_s = service, t0, report, period_s
        self.stopped = threading.Event()
        self.redis = service.redis()

    def sample(self) -> None:
        info = self.redis.info("memory")
        stats = self.redis.mget([K.QUEUED_IMAGES_KEY])
        bucket_keys = list(self.redis.scan_iter(match=f"{K.PREFIX}:stats:result_bytes:*"))
        stored = sum(int(v or 0) for v in self.redis.mget(bucket_keys)) if bucket_keys else 0
        self.report.samples.append(
            Sample(
                time.monotonic() - self.t0,
                self.service.images_generated(),
                self.service.api_rss_mb(),
                max(self.service.worker_rss_mb() or [0.0]),
                float(info["used_memory"]) / 1e6,
                int(stats[0] or 0),
                stored,
            )
        )

    def run(self) -> None:
        while not self.stopped.wait(self.period_s):
            self.sample()


def measure_capacity(service: LiveService, job_size: int, seconds: float = 3.0) -> float:
    """Images/s the workers complete with a full queue."""
    with httpx.Client(base_url=service.base_url, timeout=60) as http:
        warm = http.post("/v1/jobs", json={"count": 2 * job_size, "seed": 1}).json()
        started = time.monotonic()
        wait_job(http, warm["id"], lambda j: j["status"] == "succeeded")
        estimate = 2 * job_size / (time.monotonic() - started)
        jobs, ids = max(2, int(estimate * seconds / job_size)), []
        started = time.monotonic()
        while len(ids) < jobs:
            response = http.post("/v1/jobs", json={"count": job_size, "seed": 2 + len(ids)})
            if response.status_code == 202:
                ids.append(response.json()["id"])
            else:
                time.sleep(0.05)
        for job_id in ids:
            wait_job(http, job_id, lambda j: j["status"] == "succeeded")
        return jobs * job_size / (time.monotonic() - started)


def drive(base_url: str, report: Report, phase: str, t0: float, rate: float, seconds: float, clients: int) -> None:
    """Submit jobs at ``rate`` per second (open loop) for ``seconds`` from ``clients`` threads."""
    start = time.monotonic()
    end = start + seconds
    lock, counter = threading.Lock(), [0]
    report.phases[phase] = (start - t0, end - t0)

    def client(worker: int) -> None:
        with httpx.Client(base_url=base_url, timeout=30) as http:
            while True:
                with lock:
                    i = counter[0]
                    counter[0] += 1
                due = start + i / rate
                if due >= end:
                    return
                time.sleep(max(0.0, due - time.monotonic()))
                sent_at = time.monotonic() - t0
                try:
                    response = http.post("/v1/jobs", json={"count": report.job_size, "seed": 10_000 + i})
                    status, retry = response.status_code, "retry-after" in response.headers
                    job_id = response.json().get("id", "") if status == 202 else ""
                except httpx.HTTPError:
                    status, retry, job_id = 0, False, ""
                with lock:
                    report.sent.append(Sent(phase, sent_at, status, retry, job_id))

    threads = [threading.Thread(target=client, args=(c,), daemon=True) for c in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def run(
    service: LiveService, job_size: int = 100, factor: float = 10.0, overload_s: float = 60.0, baseline_s: float = 10.0,
    recovery_s: float = 15.0, clients: int = 32, capacity_s: float = 3.0,
) -> Report:  # fmt: skip
    report = Report(job_size, factor, clients)
    report.capacity_images_per_s = measure_capacity(service, job_size, capacity_s)
    report.sustainable_jobs_per_s = report.capacity_images_per_s / job_size
    normal = report.sustainable_jobs_per_s / 2
    t0 = time.monotonic()
    monitor = Monitor(service, t0, report)
    monitor.sample()
    monitor.start()
    try:
        drive(service.base_url, report, "before", t0, normal, baseline_s, clients)
        drive(service.base_url, report, "overload", t0, factor * report.sustainable_jobs_per_s, overload_s, clients)
        drive(service.base_url, report, "after", t0, normal, recovery_s, clients)
    finally:
        monitor.stopped.set()
        monitor.join()
    monitor.sample()
    return report


def _images_per_s(samples: list[Sample], start: float, end: float) -> float:
    inside = [s for s in samples if start - 0.3 <= s.at <= end + 0.3]
    if len(inside) < 2:
        return 0.0
    return (inside[-1].images - inside[0].images) / max(1e-9, inside[-1].at - inside[0].at)


def recovery_seconds(report: Report, window_s: float = 2.0) -> float | None:
    """Seconds after the overload until a window where the normal traffic is accepted (>= 90%) and the
    workers run at >= 80% of their rate before the overload; None if that never happened."""
    before, after = report.phases["before"], report.phases["after"]
    base_images = _images_per_s(report.samples, *before)
    t = after[0]
    while t + window_s <= after[1] + 1e-9:
        sent = [s for s in report.sent if s.phase == "after" and t <= s.at < t + window_s]
        accepted = sum(1 for s in sent if s.status == 202)
        if sent and accepted >= 0.9 * len(sent) and _images_per_s(report.samples, t, t + window_s) >= 0.8 * base_images:
            return t - after[0]
        t += 0.5
    return None


def summarize(report: Report) -> dict[str, Any]:
    by_status: dict[str, int] = {}
    for s in report.sent:
        key = "error" if s.status == 0 else f"{s.status}"
        by_status[key] = by_status.get(key, 0) + 1
    overload = [s for s in report.sent if s.phase == "overload"]
    first, last = report.samples[0], report.samples[-1]
    during = [s for s in report.samples if report.phases["overload"][0] <= s.at <= report.phases["overload"][1]]
    windows = []
    for name, (start, end) in report.phases.items():
        t = start
        while t < end - 1e-9:
            stop = min(end, t + 10.0)
            sent = [s for s in report.sent if s.phase == name and t <= s.at < stop]
            windows.append({
                "phase": name, "from_s": round(t, 1), "to_s": round(stop, 1),
                "images_per_s": round(_images_per_s(report.samples, t, stop), 1),
                "submitted_per_s": round(len(sent) / (stop - t), 1),
                "accepted_per_s": round(sum(1 for s in sent if s.status == 202) / (stop - t), 1),
            })  # fmt: skip
            t = stop
    recovered = recovery_seconds(report)
    return {
        "capacity_images_per_s": round(report.capacity_images_per_s, 1),
        "sustainable_jobs_per_s": round(report.sustainable_jobs_per_s, 2),
        "job_size": report.job_size,
        "factor": report.factor,
        "clients": report.clients,
        "overload_s": round(report.phases["overload"][1] - report.phases["overload"][0], 1),
        "overload_offered_per_s": round(len(overload) / (report.phases["overload"][1] - report.phases["overload"][0]), 1),
        "requests": len(report.sent),
        "by_status": by_status,
        "server_errors": sum(1 for s in report.sent if s.status >= 500),
        "connection_errors": by_status.get("error", 0),
        "429_without_retry_after": sum(1 for s in report.sent if s.status == 429 and not s.retry_after),
        "api_rss_mb": {"before": round(first.api_rss_mb), "peak": round(max(s.api_rss_mb for s in report.samples)),
                       "after": round(last.api_rss_mb)},
        "worker_rss_mb": {"before": round(first.worker_rss_mb), "peak": round(max(s.worker_rss_mb for s in report.samples)),
                          "after": round(last.worker_rss_mb)},
        "redis_used_mb": {"before": round(first.redis_mb, 1), "peak": round(max(s.redis_mb for s in report.samples), 1),
                          "after": round(last.redis_mb, 1)},
        "redis_overhead_mb": {  # used_memory less the result bytes it stores
            "before": round(first.redis_mb - first.result_bytes / 1e6, 1),
            "peak": round(max(s.redis_mb - s.result_bytes / 1e6 for s in report.samples), 1),
        },
        "queued_images_peak": max((s.queued_images for s in during), default=0),
        "windows": windows,
        "recovered_after_s": recovered,
    }  # fmt: skip


def table(summary: dict[str, Any]) -> str:
    lines = [
        f"capacity {summary['capacity_images_per_s']} images/s = {summary['sustainable_jobs_per_s']} jobs/s of "
        f"{summary['job_size']} images; overload {summary['factor']}x for {summary['overload_s']} s from "
        f"{summary['clients']} clients (offered {summary['overload_offered_per_s']} jobs/s)",
        f"responses: {summary['by_status']}; 5xx {summary['server_errors']}, connection errors "
        f"{summary['connection_errors']}, 429 without Retry-After {summary['429_without_retry_after']}",
        f"api RSS MB {summary['api_rss_mb']}; worker RSS MB {summary['worker_rss_mb']}",
        f"redis used_memory MB {summary['redis_used_mb']}; less stored results {summary['redis_overhead_mb']}; "
        f"queued images peak {summary['queued_images_peak']}",
        "windows (s)          images/s  submitted/s  accepted/s",
    ]
    for w in summary["windows"]:
        lines.append(
            f"  {w['phase']:8} {w['from_s']:6.1f}-{w['to_s']:<6.1f} {w['images_per_s']:8.1f} "
            f"{w['submitted_per_s']:12.1f} {w['accepted_per_s']:11.1f}"
        )
    recovered = summary["recovered_after_s"]
    lines.append(f"throughput back to normal {recovered} s after the overload" if recovered is not None else "never recovered")
    return "\n".join(lines)
