"""The serving engine under real conditions: worker processes, SIGKILL, priorities, budgets, expiry."""

from __future__ import annotations

import io
import signal
import subprocess
import tarfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
from fastapi.testclient import TestClient

from service.engine.registry import ModelRegistry
from service.engine.rendering import RenderSpec, render
from service.queue import keys as K
from tests.support.jobs import wait_job

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def engine_app(app_factory: Callable[..., TestClient]) -> Callable[..., TestClient]:
    defaults = {"chunk_size": 50, "batch_size": 32}
    return lambda with_worker=True, **overrides: app_factory(with_worker, **{**defaults, **overrides})


def _wait(client: TestClient, job_id: str, until: Callable[[dict[str, Any]], bool], timeout_s: float = 120) -> dict[str, Any]:
    return wait_job(client, job_id, until, timeout_s)


def _pngs(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        names = tar.getnames()
        assert len(names) == len(set(names)), "duplicated members"
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.name.endswith(".png")}  # type: ignore[union-attr]


def test_sigkill_mid_job_loses_nothing_and_changes_no_byte(
    engine_app: Callable[..., TestClient],
    worker_processes: Callable[..., subprocess.Popen[bytes]],
    redis_url: str,
    tiny_models_dir: Path,
) -> None:
    api = engine_app(with_worker=False)
    job = api.post("/v1/jobs", json={"count": 2000, "seed": 21}).json()
    victim = worker_processes()
    _wait(api, job["id"], lambda j: j["done"] >= 300)
    victim.send_signal(signal.SIGKILL)
    victim.wait(10)
    client = redis.Redis.from_url(redis_url)
    held = client.xpending(K.STREAM_BULK, K.WORKER_GROUP)["pending"]
    done_at_kill = api.get(f"/v1/jobs/{job['id']}").json()["done"]
    assert done_at_kill < 2000, "the job finished before the kill; make it bigger"

    worker_processes()  # the rescuer
    final = _wait(api, job["id"], lambda j: j["status"] in ("succeeded", "failed"))
    assert final["status"] == "succeeded" and final["done"] == 2000
    if held:
        assert int(client.get(K.REDELIVERIES_KEY) or 0) >= 1  # the dead worker's entries were reclaimed
    client.close()

    pngs = _pngs(api.get(f"/v1/jobs/{job['id']}/result").content)
    assert sorted(pngs) == [f"{i:08d}.png" for i in range(2000)]
    model = ModelRegistry.from_directory(tiny_models_dir, "tiny").default
    clean = render(model, RenderSpec(seed=21), np.arange(2000))
    assert all(pngs[f"{s.index:08d}.png"] == s.data for s in clean)


def test_two_worker_processes_share_one_job(
    engine_app: Callable[..., TestClient], worker_processes: Callable[..., subprocess.Popen[bytes]], redis_url: str
) -> None:
    api = engine_app(with_worker=False)
    worker_processes()
    worker_processes()
    job = api.post("/v1/jobs", json={"count": 1500, "seed": 4}).json()
    final = _wait(api, job["id"], lambda j: j["status"] == "succeeded")
    assert final["done"] == 1500
    client = redis.Redis.from_url(redis_url)
    consumers = client.xinfo_consumers(K.STREAM_BULK, K.WORKER_GROUP)
    client.close()
    assert len(consumers) == 2  # both processes read from the group
    assert len(_pngs(api.get(f"/v1/jobs/{job['id']}/result").content)) == 1500


def test_an_interactive_job_finishes_while_a_big_bulk_job_runs(engine_app: Callable[..., TestClient]) -> None:
    api = engine_app(worker_concurrency=2, chunk_size=64, batch_size=16)
    bulk = api.post("/v1/jobs", json={"count": 20000, "seed": 1}).json()
    assert bulk["links"]
    _wait(api, bulk["id"], lambda j: j["done"] >= 64)
    interactive = api.post("/v1/jobs", json={"count": 8, "seed": 2}).json()
    _wait(api, interactive["id"], lambda j: j["status"] == "succeeded", timeout_s=30)
    status = api.get(f"/v1/jobs/{bulk['id']}").json()
    assert status["priority"] == "bulk" and status["status"] == "running" and status["done"] < 20000
    api.delete(f"/v1/jobs/{bulk['id']}")


def test_admission_control_answers_429_with_retry_after(engine_app: Callable[..., TestClient]) -> None:
    api = engine_app(with_worker=False, max_queued_images=100)
    assert api.post("/v1/jobs", json={"count": 80}).status_code == 202
    full = api.post("/v1/jobs", json={"count": 30})
    assert full.status_code == 429
    error = full.json()["error"]
    assert error["code"] == "queue_full" and int(full.headers["retry-after"]) >= 1
    assert error["details"]["queued_images"] == 80 and "budget is 100" in error["message"]
    huge = api.post("/v1/jobs", json={"count": 101})
    assert huge.status_code == 413 and huge.json()["error"]["code"] == "too_large"
    assert 'synthgen_admissions_rejected_total{reason="queue_full"}' in api.get("/metrics").text
    # cancelling releases the queued images, so there is room again
    job_id = api.post("/v1/jobs", json={"count": 20}).json()["id"]
    api.delete(f"/v1/jobs/{job_id}")
    assert api.post("/v1/jobs", json={"count": 20}).status_code == 202


def test_result_budget_refuses_new_jobs_until_results_expire(engine_app: Callable[..., TestClient]) -> None:
    api = engine_app(max_result_bytes=1000)
    job = api.post("/v1/jobs", json={"count": 10}).json()
    _wait(api, job["id"], lambda j: j["status"] == "succeeded")
    refused = api.post("/v1/jobs", json={"count": 1})
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "queue_full"
    assert "stored results take" in refused.json()["error"]["message"]
    assert 1 <= int(refused.headers["retry-after"]) <= 600


def test_expired_jobs_read_as_expired_and_are_skipped(engine_app: Callable[..., TestClient], redis_url: str) -> None:
    api = engine_app(with_worker=False)
    job = api.post("/v1/jobs", json={"count": 100}).json()
    client = redis.Redis.from_url(redis_url)
    client.hset(K.job_key(job["id"]), "expires_at", time.time() - 1)
    status = api.get(f"/v1/jobs/{job['id']}").json()
    assert status["status"] == "expired"
    gone = api.get(f"/v1/jobs/{job['id']}/result")
    assert gone.status_code == 409 and "expired" in gone.json()["error"]["message"]
    worker_api = engine_app()  # a worker now skips the expired job's chunks and releases its images
    deadline = time.monotonic() + 30
    while int(client.get(K.QUEUED_IMAGES_KEY) or 0) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert int(client.get(K.QUEUED_IMAGES_KEY) or 0) == 0 and client.xlen(K.STREAM_BULK) == 0
    assert worker_api.get(f"/v1/jobs/{job['id']}").json()["done"] == 0
    client.close()


def test_directory_result_store(engine_app: Callable[..., TestClient], tmp_path: Path) -> None:
    api = engine_app(result_store=f"dir:{tmp_path}")
    job = api.post("/v1/jobs", json={"count": 120, "seed": 8}).json()
    pngs = _pngs(api.get(f"/v1/jobs/{job['id']}/result").content)
    assert len(pngs) == 120
    files = sorted((tmp_path / job["id"]).glob("*.tar"))
    assert [f.name for f in files] == ["00000000.tar", "00000001.tar", "00000002.tar"]
    assert not list(tmp_path.rglob("*.tmp.*"))  # no partial chunk left behind


def test_worker_health_key_backs_the_liveness_command(
    engine_app: Callable[..., TestClient], redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from service.settings import get_settings
    from service.worker.health import check_worker_health

    monkeypatch.setenv("REDIS_URL", redis_url)
    get_settings.cache_clear()
    try:
        ok, message = check_worker_health(30)
        assert not ok and "no worker heartbeat" in message
        engine_app()  # a worker in this process writes its heartbeat at once
        deadline = time.monotonic() + 10
        while not (result := check_worker_health(30))[0] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert result[0], result[1]
        assert not check_worker_health(30, name="someone-else")[0]
    finally:
        get_settings.cache_clear()


def test_redis_restart_mid_job(
    engine_app: Callable[..., TestClient],
    worker_processes: Callable[..., subprocess.Popen[bytes]],
    redis_factory: Callable[..., Any],
    tiny_models_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Redis (AOF on) goes away mid-job: the API answers 503 meanwhile; api and worker recover by themselves."""
    server = redis_factory(appendonly=True)
    client = redis.Redis.from_url(server.url)
    client.config_set("appendfsync", "always")  # nothing acknowledged is lost in the restart
    api = engine_app(with_worker=False, redis_url=server.url)
    worker = worker_processes(REDIS_URL=server.url, SYNTHGEN_BATCH_SIZE="16")
    job = api.post("/v1/jobs", json={"count": 1500, "seed": 6}).json()
    _wait(api, job["id"], lambda j: j["done"] >= 200)
    server.stop(keep_data=True)
    down = api.get(f"/v1/jobs/{job['id']}")
    assert down.status_code == 503 and down.json()["error"]["code"] == "unavailable"
    assert api.get("/readyz").status_code == 503
    time.sleep(1.0)
    server.start()
    final = _wait(api, job["id"], lambda j: j["status"] in ("succeeded", "failed"), timeout_s=120)
    assert final["status"] == "succeeded" and final["done"] == 1500
    assert api.get("/readyz").status_code == 200 and worker.poll() is None
    pngs = _pngs(api.get(f"/v1/jobs/{job['id']}/result").content)
    model = ModelRegistry.from_directory(tiny_models_dir, "tiny").default
    assert all(pngs[f"{s.index:08d}.png"] == s.data for s in render(model, RenderSpec(seed=6), np.arange(1500)))
    client.close()


def test_a_decoder_with_spare_instances_decodes_a_batch_in_parts_with_the_same_bytes(tiny_models_dir: Path) -> None:
    """Two one-thread sessions (``ort_instances``) decode the halves of each batch at once, with the bytes of a single
    session, also when several threads decode at the same time (and for a batch of one row)."""
    from concurrent.futures import ThreadPoolExecutor

    from service.engine.registry import ModelRegistry, instance_plan

    one = ModelRegistry.from_directory(tiny_models_dir, "tiny").default
    two = ModelRegistry.from_directory(tiny_models_dir, "tiny", "cpu", threads=2, instances=2).default
    assert (one.instances, two.instances) == (1, 2)
    rows = [one.inputs(seed, np.arange(16 + seed)) for seed in range(8)] + [one.inputs(9, np.arange(1))]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(two.decode, rows))
    assert all(np.array_equal(a, one.decode(r)) for a, r in zip(together, rows, strict=True))
    assert two._pool is not None and one._pool is None  # the second session decoded parts of the batches
    assert instance_plan(["CPUExecutionProvider"], 2, 0) == (2, 1)
    assert instance_plan(["CPUExecutionProvider"], 16, 0) == (4, 4)
    assert instance_plan(["CUDAExecutionProvider", "CPUExecutionProvider"], 8, 0) == (1, 8)
    assert instance_plan(["CPUExecutionProvider"], 4, 2) == (2, 2)
