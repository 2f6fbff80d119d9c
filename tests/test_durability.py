"""The embedded default keeps its jobs: `synthgen serve` killed (SIGKILL) or stopped (SIGTERM) mid-job and
started again the same way finishes the job with every image once and the bytes of a clean run.

Real processes throughout: the README's `synthgen serve` (api and worker in one process) on its embedded
redis-server, whose append-only file lives in SYNTHGEN_DATA_DIR.
"""

from __future__ import annotations

import asyncio
import logging
import random
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import redis
from fastapi.testclient import TestClient

from service.queue.eviction import EvictingRedis, check_eviction_policy
from tests.support.jobs import clean_tar_digest, download_digest, expected_names, finished, tar_names, wait_job
from tests.support.live import REPO, StandaloneServe

SEED = 11
SHIPPED_MODELS = REPO / "models"


@pytest.fixture
def standalone(tiny_models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., StandaloneServe]]:
    started: list[StandaloneServe] = []

    def make(models_dir: Path = tiny_models_dir, model: str = "tiny", chunk_size: int = 50, **env: str) -> StandaloneServe:
        data_dir = tmp_path_factory.mktemp("data")  # short: the redis socket lives in it
        values = {"SYNTHGEN_MODELS_DIR": str(models_dir), "SYNTHGEN_DEFAULT_MODEL": model, "SYNTHGEN_CHUNK_SIZE": str(chunk_size)}
        serve = StandaloneServe(data_dir, {**values, **env}, log_dir=tmp_path_factory.mktemp("logs"))
        started.append(serve)
        return serve

    yield make
    for serve in started:
        serve.close()


def _interrupt_again_and_again(
    serve: StandaloneServe, count: int, interruptions: int, sig: int, models_dir: Path, model: str
) -> list[float]:
    """Create one job, interrupt the process ``interruptions`` times at random points, start it again each
    time; check the job ends with every image once and the bytes of a clean run. Returns the exit times."""
    rng = random.Random(count * 31 + interruptions)
    serve.start()
    with httpx.Client(base_url=serve.base_url, timeout=60) as http:
        job = http.post("/v1/jobs", json={"count": count, "seed": SEED}).json()
    exits = []
    for k in range(interruptions):
        target = int(count * (k + rng.random()) / (interruptions + 1))
        with httpx.Client(base_url=serve.base_url, timeout=60) as http:
            seen = wait_job(http, job["id"], lambda j, t=target: j["done"] >= t or finished(j), timeout_s=600)
        assert seen["status"] != "failed", seen
        exits.append(serve.stop(sig))
        serve.start()
    with httpx.Client(base_url=serve.base_url, timeout=60) as http:
        final = wait_job(http, job["id"], finished, timeout_s=900)
    assert final["status"] == "succeeded" and final["done"] == count, final
    with httpx.Client(base_url=serve.base_url, timeout=120) as http:
        digest, names = download_digest(http, job["id"])
    assert names == expected_names(count)  # every image once, in order
    assert digest == clean_tar_digest(models_dir, model, SEED, count)  # the bytes of a clean run
    assert "Traceback" not in serve.logs()
    print(f"\n{count} images, {interruptions} x signal {sig}: exits took {', '.join(f'{e:.2f}' for e in exits)} s")
    return exits


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["sigkill", "sigterm"])
def test_serve_interrupted_mid_job_finishes_it_with_the_same_bytes(
    standalone: Callable[..., StandaloneServe], tiny_models_dir: Path, sig: int
) -> None:
    serve = standalone(SYNTHGEN_DRAIN_TIMEOUT_S="20")
    exits = _interrupt_again_and_again(serve, 1500, 2, sig, tiny_models_dir, "tiny")
    if sig == signal.SIGTERM:  # drained: in-flight chunks finished or were handed back, within the bound
        assert max(exits) < 2 * 20 + 5, exits


@pytest.mark.full
def test_readme_serve_killed_ten_times_in_a_20000_image_job(standalone: Callable[..., StandaloneServe]) -> None:
    """The README's own `synthgen serve` on the shipped model, SIGKILLed at 10 random points of one job."""
    serve = standalone(SHIPPED_MODELS, "avatars-64", chunk_size=256)
    _interrupt_again_and_again(serve, 20_000, 10, signal.SIGKILL, SHIPPED_MODELS, "avatars-64")


def test_a_queued_job_survives_a_restart_before_any_work(standalone: Callable[..., StandaloneServe]) -> None:
    serve = standalone(SYNTHGEN_WORKER_CONCURRENCY="1", SYNTHGEN_BATCH_SIZE="8")
    serve.start()
    with httpx.Client(base_url=serve.base_url, timeout=60) as http:
        job = http.post("/v1/jobs", json={"count": 400, "seed": 3}).json()
    serve.stop(signal.SIGKILL)  # whatever had started is pending, the rest queued
    serve.start()
    with httpx.Client(base_url=serve.base_url, timeout=60) as http:
        final = wait_job(http, job["id"], finished, timeout_s=300)
        assert final["status"] == "succeeded" and final["done"] == 400
        assert tar_names(http.get(f"/v1/jobs/{job['id']}/result").content) == expected_names(400)


def test_a_second_serve_on_the_same_folder_is_refused(standalone: Callable[..., StandaloneServe]) -> None:
    first = standalone()
    first.start()
    second = StandaloneServe(first.data_dir, first.env)
    try:
        process = second.start(wait=False)
        assert process.wait(60) == 2
    finally:
        second.stop(signal.SIGKILL)  # only the process: the redis-server on the folder is the first one's
    message = second.logs()
    assert "is in use by another synthgen serve" in message and f"pid {first.process.pid}" in message  # type: ignore[union-attr]
    assert "SYNTHGEN_DATA_DIR" in message
    assert httpx.get(f"{first.base_url}/readyz", timeout=5).status_code == 200  # the first one is untouched


def test_the_embedded_server_refuses_to_evict(standalone: Callable[..., StandaloneServe]) -> None:
    serve = standalone()
    serve.start()
    client = redis.Redis(unix_socket_path=str(serve.data_dir / "redis" / "redis.sock"))
    assert client.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
    assert client.config_get("appendonly")["appendonly"] == "yes"
    assert client.config_get("appendfsync")["appendfsync"] == "everysec"
    client.close()


def test_an_evicting_redis_is_reported_or_refused(
    redis_url: str, app_factory: Callable[..., TestClient], caplog: pytest.LogCaptureFixture
) -> None:
    redis.Redis.from_url(redis_url).config_set("maxmemory-policy", "allkeys-lru")
    with caplog.at_level(logging.WARNING):
        app_factory(with_worker=False)
    assert any("maxmemory-policy is 'allkeys-lru'" in r.getMessage() for r in caplog.records)
    with pytest.raises(EvictingRedis, match="allkeys-lru"):
        app_factory(with_worker=False, require_noeviction=True)

    async def unreadable() -> None:
        class NoConfig:
            async def config_get(self, name: str) -> None:
                import redis.asyncio as aioredis

                raise aioredis.ResponseError("unknown command 'CONFIG'")

        assert await check_eviction_policy(NoConfig(), refuse=True) is None  # type: ignore[arg-type]

    asyncio.run(unreadable())


def test_serve_help_names_the_data_folder() -> None:
    out = subprocess.run([sys.executable, "-m", "synthgen.cli", "serve", "--help"], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0 and "SYNTHGEN_DATA_DIR" in out.stdout
