"""Faults on real processes: SIGKILLed workers, a SIGKILLed api under a streaming client, Redis restarts,
a full result store, bad model packages. Each test has a fast size (make test) and the issue's size
(marked ``full``, make test-full)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.engine.registry import ModelRegistry
from service.engine.rendering import RenderSpec, render, samples_to_tar
from service.queue import keys as K
from synthgen.cli import main
from synthgen.client import SynthgenClient
from synthgen.core.webdataset import tar_end
from tests.support.jobs import clean_tar_digest, download_digest, expected_names, finished, tar_names, wait_job
from tests.support.live import REPO, LiveService, busiest_worker, free_port, held_by_pid

SEED = 20_000
LONG = pytest.mark.timeout(3600)


@pytest.fixture(scope="module")
def digests(tiny_models_dir: Path) -> Callable[[int], str]:
    """sha256 of a clean result of ``count`` images of SEED, made in this process (memoized)."""
    known: dict[int, str] = {}

    def digest(count: int) -> str:
        if count not in known:
            known[count] = clean_tar_digest(tiny_models_dir, "tiny", SEED, count)
        return known[count]

    return digest


@pytest.mark.parametrize(
    ("runs", "count", "cluster"),
    [
        pytest.param(2, 1500, False, id="2-runs-of-1500"),
        pytest.param(2, 1500, True, id="2-runs-of-1500-on-redis-cluster"),
        pytest.param(10, 20_000, False, id="10-runs-of-20000", marks=[pytest.mark.full, LONG]),
        pytest.param(10, 20_000, True, id="10-runs-of-20000-on-redis-cluster", marks=[pytest.mark.full, LONG]),
    ],
)
def test_sigkill_a_worker_mid_job_again_and_again(
    runs: int, count: int, cluster: bool, live_service: Callable[..., LiveService], digests: Callable[[int], str]
) -> None:
    """Each run: a job, one of two worker processes SIGKILLed at a random point, a replacement started.
    Every run completes with every image exactly once and the bytes of a clean, in-process run.
    Also on a real 3-master Redis Cluster (12 queue shards, every key hash-tagged)."""
    service = live_service(workers=2, cluster=cluster, SYNTHGEN_CHUNK_SIZE="100")
    service.wait_workers()
    client = service.redis()
    rng = random.Random(count)
    kills = lost_in_flight = 0
    with httpx.Client(base_url=service.base_url, timeout=60) as http:
        for run in range(runs):
            job = http.post("/v1/jobs", json={"count": count, "seed": SEED}).json()
            at = int(count * rng.uniform(0.1, 0.6))
            wait_job(http, job["id"], lambda j, at=at: j["done"] >= at)
            victim, held = busiest_worker(service, client, rng)
            for _ in range(100):  # between two reads a worker may hold nothing: kill one that holds work
                if held:
                    break
                time.sleep(0.01)
                victim, held = busiest_worker(service, client, rng)
            redeliveries = int(client.get(K.REDELIVERIES_KEY) or 0)
            service.kill_worker(victim)
            # what the dead worker really held: measured after the kill (before it, it may still have finished them)
            held_at_death = held_by_pid(service, client).get(victim.pid, 0)
            done_at_kill = http.get(f"/v1/jobs/{job['id']}").json()["done"]
            assert done_at_kill < count, f"run {run}: the job finished before the kill; make it bigger"
            kills += 1
            lost_in_flight += held
            service.add_worker()
            final = wait_job(http, job["id"], finished, timeout_s=600)
            assert final["status"] == "succeeded" and final["done"] == count, (run, final)
            if held_at_death:  # the dead worker's work items were taken over, not dropped
                assert int(client.get(K.REDELIVERIES_KEY) or 0) > redeliveries
            chunks = -(-count // 100)
            assert client.scard(service.keys.job_done(job["id"])) == chunks  # each chunk counted once
            digest, names = download_digest(http, job["id"])
            assert names == expected_names(count), f"run {run}: images lost, duplicated or out of order"
            assert digest == digests(count), f"run {run}: bytes differ from a clean run"
        assert service.queued_images() == 0  # nothing left counted as queued
    assert kills == runs and lost_in_flight > 0, "no kill ever hit a worker holding work"
    print(
        f"\nSIGKILL: {kills} kills survived in {runs} runs of {count} images ({lost_in_flight} work items in flight "
        "were taken over); 0 lost, 0 duplicated, bytes identical"
    )


@pytest.mark.parametrize(
    ("count", "kills"),
    [pytest.param(1500, 1, id="1-kill"), pytest.param(20_000, 3, id="3-kills-of-20000", marks=[pytest.mark.full, LONG])],
)
def test_sigkill_the_api_while_a_client_streams_the_result(
    count: int, kills: int, live_service: Callable[..., LiveService], digests: Callable[[int], str]
) -> None:
    """The api process dies mid-download and comes back: the client resumes at the first missing sample
    (?start=) and what it yields is byte for byte a clean run."""
    service = live_service(workers=1)
    delays: list[float] = []

    def sleep(seconds: float) -> None:
        delays.append(seconds)
        time.sleep(seconds)

    kill_at = {count * (k + 1) // (kills + 2) for k in range(kills)}  # early: the stream must still be running
    digest, seen = hashlib.sha256(), 0
    with SynthgenClient(service.base_url, max_retries=12, backoff_max=2.0, sleep=sleep) as client:
        job = client.create_job(count, seed=SEED)
        for sample in client.iter_samples(job.id):
            digest.update(sample.raw)
            seen += 1
            if seen in kill_at:
                service.kill_api()  # SIGKILL: no graceful shutdown, the stream is cut mid-flight
                service.start_api(wait=False)
    digest.update(tar_end())
    assert seen == count
    assert len(delays) >= kills, "the client never had to resume: the kill did not hit the stream"
    assert digest.hexdigest() == digests(count)
    print(f"\napi SIGKILL while streaming: {kills} kills, {len(delays)} client retries, bytes identical")


def _route_answers(http: httpx.Client, job_id: str) -> dict[str, tuple[int, str, float]]:
    """Every route once: (status, error code, seconds). A hang shows as an httpx timeout."""
    requests: list[tuple[str, str, Any]] = [
        ("GET", "/healthz", None),
        ("GET", "/readyz", None),
        ("GET", "/metrics", None),
        ("GET", "/v1/models", None),
        ("POST", "/v1/jobs", {"count": 5}),
        ("GET", f"/v1/jobs/{job_id}", None),
        ("GET", f"/v1/jobs/{job_id}/result", None),
        ("GET", f"/v1/jobs/{job_id}/images/0", None),
        ("DELETE", "/v1/jobs/nonexistent-job-id", None),
        ("GET", "/v1/images/5.png", None),
        ("POST", "/v1/interpolate", {"from_seed": 1, "to_seed": 2, "steps": 3}),
    ]
    out = {}
    for method, path, body in requests:
        started = time.monotonic()
        response = http.request(method, path, json=body, timeout=20)
        code = response.json().get("error", {}).get("code", "") if "json" in response.headers.get("content-type", "") else ""
        out[f"{method} {path.replace(job_id, '{id}')}"] = (response.status_code, code, time.monotonic() - started)
    return out


NEEDS_REDIS = {"POST /v1/jobs", "GET /v1/jobs/{id}", "GET /v1/jobs/{id}/result", "GET /v1/jobs/{id}/images/0"}
NEEDS_REDIS |= {"DELETE /v1/jobs/nonexistent-job-id"}
NEEDS_REDIS |= {"GET /v1/images/5.png", "POST /v1/interpolate"}  # decoded by the workers, through Redis


@pytest.mark.parametrize(
    ("count", "restarts"),
    [pytest.param(1500, 1, id="1-restart"), pytest.param(20_000, 3, id="3-restarts-of-20000", marks=[pytest.mark.full, LONG])],
)
def test_redis_restarts_mid_job(
    count: int, restarts: int, live_service: Callable[..., LiveService], digests: Callable[[int], str]
) -> None:
    """Redis (AOF on) stops mid-job. Meanwhile every route that needs it answers 503 unavailable quickly,
    the others keep working; when it is back, api and worker carry on by themselves."""
    service = live_service(workers=1, appendonly=True, SYNTHGEN_BATCH_SIZE="16")
    service.wait_workers()
    with httpx.Client(base_url=service.base_url, timeout=60) as http:
        job = http.post("/v1/jobs", json={"count": count, "seed": SEED}).json()
        for restart in range(restarts):
            wait_job(http, job["id"], lambda j, r=restart: j["done"] >= count * (r + 1) // (restarts + 2))
            service.stop_redis()
            answers = _route_answers(http, job["id"])
            for route, (status, code, seconds) in answers.items():
                assert status != 500 and seconds < 15, (route, status, seconds)
                if route in NEEDS_REDIS:
                    assert (status, code) == (503, "unavailable"), (route, status, code)
            assert answers["GET /readyz"][0] == 503 and answers["GET /healthz"][0] == 200
            assert answers["GET /metrics"][0] == 200 and answers["GET /v1/models"][0] == 200
            time.sleep(1.0)
            service.start_redis()
        final = wait_job(http, job["id"], finished, timeout_s=600)
        assert final["status"] == "succeeded" and final["done"] == count
        service.wait_ready(timeout_s=30)
        assert service.api is not None and service.api.poll() is None
        assert all(w.poll() is None for w in service.workers)
        digest, names = download_digest(http, job["id"])
        assert names == expected_names(count) and digest == digests(count)
        again = http.post("/v1/jobs", json={"count": 20, "seed": 1}).json()  # new work flows again
        assert wait_job(http, again["id"], finished)["status"] == "succeeded"
    assert "Traceback" not in service.logs("api")


@contextlib.contextmanager
def _tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_a_full_result_disk_fails_the_job_clearly_and_serves_no_corrupt_chunk(
    app_factory: Callable[..., TestClient], tiny_models_dir: Path, tmp_path: Path
) -> None:
    with _tmpfs(tmp_path / "volume", "640k") as volume:
        api = app_factory(result_store=f"dir:{volume}", chunk_size=50, batch_size=32)
        job = api.post("/v1/jobs", json={"count": 2000, "seed": SEED}).json()
        final = wait_job(api, job["id"], finished, timeout_s=120)
        assert final["status"] == "failed"
        assert "result store full" in final["error"] and "No space left on device" in final["error"], final
        assert "no partial chunk was kept" in final["error"]
        result = api.get(f"/v1/jobs/{job['id']}/result")
        assert result.status_code == 409 and "failed" in result.json()["error"]["message"]
        assert api.get(f"/v1/jobs/{job['id']}/images/0").status_code == 409
        # what is on the volume is whole: no temporary file, and each chunk is exactly its clean bytes
        assert not list(volume.rglob("*.tmp.*"))
        stored = sorted((volume / job["id"]).glob("*.tar"))
        assert stored and len(stored) == final["done"] // 50
        model = ModelRegistry.from_directory(tiny_models_dir, "tiny").default
        for path in stored:
            chunk = int(path.stem)
            clean, _ = samples_to_tar(render(model, RenderSpec(seed=SEED), np.arange(chunk * 50, chunk * 50 + 50)), "png")
            assert path.read_bytes() == clean, f"chunk {chunk} on the volume is corrupt"
        # a volume with not one byte left: a new job's first write fails with the same clear error
        with contextlib.suppress(OSError), open(volume / "filler", "wb") as filler:
            while True:
                filler.write(b"\0" * 4096)
                filler.flush()
        second = api.post("/v1/jobs", json={"count": 60, "seed": 2}).json()
        failed = wait_job(api, second["id"], finished, timeout_s=120)
        assert failed["status"] == "failed" and "result store full" in failed["error"], failed
        assert not list(volume.rglob("*.tmp.*"))
        # room again: the same server takes and completes new work
        shutil.rmtree(volume / job["id"])
        (volume / "filler").unlink()
        again = api.post("/v1/jobs", json={"count": 60, "seed": 3}).json()
        assert wait_job(api, again["id"], finished)["status"] == "succeeded"
        assert len(tar_names(api.get(f"/v1/jobs/{again['id']}/result").content)) == 120


def test_a_full_result_budget_refuses_new_work_and_keeps_serving_what_is_stored(
    app_factory: Callable[..., TestClient], tiny_models_dir: Path
) -> None:
    api = app_factory(max_result_bytes=20_000, chunk_size=50, batch_size=32)
    job = api.post("/v1/jobs", json={"count": 100, "seed": SEED}).json()
    assert wait_job(api, job["id"], finished)["status"] == "succeeded"
    refused = api.post("/v1/jobs", json={"count": 1})
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "queue_full"
    assert "stored results take" in refused.json()["error"]["message"] and int(refused.headers["retry-after"]) >= 1
    data = api.get(f"/v1/jobs/{job['id']}/result").content
    assert hashlib.sha256(data).hexdigest() == clean_tar_digest(tiny_models_dir, "tiny", SEED, 100)


# A bad model package stops `synthgen serve` before it listens, with one line naming the file.


def _tamper(package: Path) -> str:
    data = bytearray((package / "decoder.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (package / "decoder.onnx").write_bytes(bytes(data))
    return r"decoder\.onnx: sha256 [0-9a-f]+.* does not match"


def _truncate(package: Path) -> str:
    path = package / "decoder.onnx"
    path.write_bytes(path.read_bytes()[:4096])
    return r"decoder\.onnx: 4096 bytes, manifest says \d+ \(truncated\?\)"


def _wrong_shape(package: Path) -> str:
    import json

    manifest = json.loads((package / "manifest.json").read_text())
    manifest["latent_dim"] = manifest["latent_dim"] + 1
    (package / "manifest.json").write_text(json.dumps(manifest))
    return r"expected input z \[batch, 9\]"


BAD_PACKAGES = {"tampered": _tamper, "truncated": _truncate, "wrong-shape": _wrong_shape}


@pytest.fixture(params=sorted(BAD_PACKAGES))
def bad_models(request: pytest.FixtureRequest, tiny_models_dir: Path, tmp_path: Path) -> tuple[Path, str]:
    models = tmp_path / "models"
    shutil.copytree(tiny_models_dir / "tiny", models / "tiny")
    return models, BAD_PACKAGES[request.param](models / "tiny")


@pytest.mark.parametrize("role", ["api", "worker"])
def test_a_bad_model_package_stops_serve_at_start_up(
    role: str, bad_models: tuple[Path, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import re

    from service.settings import get_settings

    models, expected = bad_models
    monkeypatch.setenv("SYNTHGEN_MODELS_DIR", str(models))
    monkeypatch.setenv("SYNTHGEN_DEFAULT_MODEL", "tiny")
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")  # never reached: the package is checked first
    get_settings.cache_clear()
    try:
        assert main(["serve", "--role", role, "--port", "0"]) == 2
    finally:
        get_settings.cache_clear()
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and re.search(expected, err), err


@pytest.mark.full
@pytest.mark.parametrize("role", ["api", "worker", "all"])
def test_a_bad_model_package_stops_the_serve_process(role: str, bad_models: tuple[Path, str]) -> None:
    """The same, as real processes: exit status 2, one line on stderr, and nothing ever listens."""
    import re

    models, expected = bad_models
    port = free_port()
    env = {**os.environ, "SYNTHGEN_MODELS_DIR": str(models), "SYNTHGEN_DEFAULT_MODEL": "tiny", "REDIS_URL": ""}
    if role != "all":
        env["REDIS_URL"] = "redis://127.0.0.1:1/0"
    done = subprocess.run(
        [sys.executable, "-m", "synthgen.cli", "serve", "--role", role, "--port", str(port)],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and re.search(expected, lines[0]), done.stderr
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
