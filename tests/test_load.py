"""Load on real processes: an overload of job submissions (bench/bench_overload.py), and a soak that
leaves no Redis key behind (bench/bench_soak.py). The fast sizes run in make test; the issue's sizes
are marked ``full``."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from service.queue import keys as K
from tests.support import overload as bench_overload
from tests.support import soak as bench_soak
from tests.support.jobs import wait_job
from tests.support.live import LiveService, leaked_keys

JOB_SIZE, CLIENTS, BUDGET = 100, 16, 2000


@pytest.mark.parametrize(
    ("overload_s", "baseline_s", "recovery_s"),
    [
        pytest.param(3.0, 1.5, 5.0, id="3s"),
        pytest.param(60.0, 10.0, 15.0, id="60s", marks=[pytest.mark.full, pytest.mark.timeout(900)]),
    ],
)
def test_an_overload_of_10x_is_refused_cleanly_and_throughput_comes_back(
    overload_s: float, baseline_s: float, recovery_s: float, live_service: Callable[..., LiveService]
) -> None:
    service = live_service(workers=1, SYNTHGEN_MAX_QUEUED_IMAGES=str(BUDGET), SYNTHGEN_CHUNK_SIZE="100")
    service.wait_workers()
    report = bench_overload.run(service, JOB_SIZE, 10.0, overload_s, baseline_s, recovery_s, CLIENTS, min(3.0, baseline_s / 1.5))
    summary = bench_overload.summarize(report)
    print("\n" + bench_overload.table(summary))

    assert summary["server_errors"] == 0 and summary["connection_errors"] == 0, summary["by_status"]
    assert summary["by_status"].get("429", 0) > summary["by_status"].get("202", 0), "that was no overload"
    assert summary["429_without_retry_after"] == 0
    # bounded: the queue holds at most its budget (plus the jobs admitted in the same instant), memory stays flat
    assert summary["queued_images_peak"] <= BUDGET + CLIENTS * JOB_SIZE
    assert summary["api_rss_mb"]["peak"] - summary["api_rss_mb"]["before"] < 100, summary["api_rss_mb"]
    assert summary["worker_rss_mb"]["peak"] - summary["worker_rss_mb"]["before"] < 100, summary["worker_rss_mb"]
    assert summary["redis_overhead_mb"]["peak"] - summary["redis_overhead_mb"]["before"] < 50, summary["redis_overhead_mb"]
    recovered = summary["recovered_after_s"]
    assert recovered is not None and recovered <= 10.0, summary["windows"]

    # every job that was accepted completes
    accepted = [s.job_id for s in report.sent if s.status == 202]
    with httpx.Client(base_url=service.base_url, timeout=30) as http:
        for job_id in accepted:
            assert wait_job(http, job_id, lambda j: j["status"] in ("succeeded", "failed"))["status"] == "succeeded"
    assert int(service.redis().get(K.QUEUED_IMAGES_KEY) or 0) == 0


def _jobs_of_every_kind(http: httpx.Client) -> None:
    small = http.post("/v1/jobs", json={"count": 8, "seed": 1, "unique": True}).json()
    odd = http.post("/v1/jobs", json={"count": 300, "seed": 2, "format": "jpeg", "priority": "interactive"}).json()
    cancelled = http.post("/v1/jobs", json={"count": 5000, "seed": 3}).json()
    http.delete(f"/v1/jobs/{cancelled['id']}")
    for job in (small, odd):
        assert wait_job(http, job["id"], lambda j: j["status"] in ("succeeded", "failed"))["status"] == "succeeded"


def test_a_soak_leaves_no_redis_key_without_an_expiry(live_service: Callable[..., LiveService]) -> None:
    """Jobs of every kind (bulk, interactive, unique, jpeg, cancelled) through the service: nothing is
    lost, memory stays flat, and every key left in Redis is one of the permanent ones or expires."""
    service = live_service(workers=2, SYNTHGEN_CHUNK_SIZE="256", SYNTHGEN_BATCH_SIZE="64")
    service.wait_workers()
    report = bench_soak.run(service, 4000, job_size=1000, clients=2, sample_every_s=0.5)
    print("\n" + bench_soak.describe(report))
    assert report.images_done == 4000 and report.failed == 0 and report.lost == 0
    assert report.rss_growth_mb() < 50, report.rss_series()
    client = service.redis()
    with httpx.Client(base_url=service.base_url, timeout=30) as http:
        _jobs_of_every_kind(http)
    deadline = time.monotonic() + 30
    while int(client.get(K.QUEUED_IMAGES_KEY) or 0) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert int(client.get(K.QUEUED_IMAGES_KEY) or 0) == 0
    assert leaked_keys(client) == []
    ttls: dict[str, Any] = {k.decode(): client.ttl(k) for k in client.scan_iter(match=f"{K.PREFIX}:job:*")}
    # result TTL + expired retention (a day each), from an expires_at rounded up to the whole second
    assert ttls and all(0 < ttl <= 2 * 86_400 + 1 for ttl in ttls.values()), ttls


@pytest.mark.full
@pytest.mark.timeout(7200)
def test_a_soak_of_a_million_images_then_past_the_ttl(live_service: Callable[..., LiveService]) -> None:
    """bench/bench_soak.py at its full size: 1,000,000 images, flat memory, and after the 60 s TTL not one
    key of any job is left in Redis."""
    service = live_service(workers=1, SYNTHGEN_CHUNK_SIZE="256", SYNTHGEN_BATCH_SIZE="64", **bench_soak.soak_env(60))
    service.wait_workers()
    with httpx.Client(base_url=service.base_url, timeout=30) as http:
        _jobs_of_every_kind(http)
    report = bench_soak.run(service, 1_000_000, job_size=10_000, clients=2, sample_every_s=5.0, wait_ttl=True)
    print("\n" + bench_soak.describe(report))
    assert report.images_done == 1_000_000 and report.failed == 0 and report.lost == 0
    assert report.rss_growth_mb() < 50, report.rss_series()
    assert report.leaked_after_ttl == []
    assert report.keys_after_ttl is not None
    assert not [k for k in report.keys_after_ttl if k.startswith((f"{K.PREFIX}:job:", f"{K.PREFIX}:result:"))]
