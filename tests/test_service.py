"""The service end to end: a real app, a real redis-server, a real onnxruntime session."""

from __future__ import annotations

import io
import json
import tarfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.engine.registry import ModelRegistry
from service.engine.rendering import RenderSpec, render
from tests.support.jobs import finished, wait_job

ClientFactory = Callable[..., TestClient]


@pytest.fixture
def client_factory(app_factory: Callable[..., TestClient]) -> ClientFactory:
    """Apps with small chunks and batches, so that even small jobs cross chunk boundaries."""
    defaults = {"chunk_size": 32, "batch_size": 16, "max_count": 5000}
    return lambda **overrides: app_factory(**{**defaults, **overrides})


@pytest.fixture
def client(client_factory: ClientFactory) -> TestClient:
    return client_factory()


def wait_for(client: TestClient, job_id: str, timeout_s: float = 60) -> dict[str, Any]:
    return wait_job(client, job_id, finished, timeout_s)


def tar_members(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]


def test_a_job_of_100_images_yields_a_webdataset_tar(client: TestClient) -> None:
    response = client.post("/v1/jobs", json={"count": 100, "seed": 7})
    assert response.status_code == 202
    job = response.json()
    assert response.headers["location"] == f"/v1/jobs/{job['id']}"
    assert job["status"] == "queued" and job["count"] == 100 and job["seed"] == 7 and job["model"] == "tiny@1"
    assert job["links"]["result"] == f"/v1/jobs/{job['id']}/result"

    result = client.get(job["links"]["result"])  # streams while chunks complete
    assert result.status_code == 200 and result.headers["content-type"] == "application/x-tar"
    members = tar_members(result.content)
    names = sorted(members)
    assert sum(n.endswith(".png") for n in names) == 100 and sum(n.endswith(".json") for n in names) == 100
    assert names[:2] == ["00000000.json", "00000000.png"]
    meta = json.loads(members["00000042.json"])
    assert meta["index"] == 42 and meta["seed"] == 7 and len(meta["latent"]) == 8 and meta["model"] == "tiny@1"
    assert Image.open(io.BytesIO(members["00000042.png"])).size == (32, 32)
    assert len({members[f"{i:08d}.png"] for i in range(100)}) == 100  # all distinct

    status = wait_for(client, job["id"])
    assert status["status"] == "succeeded" and status["done"] == 100
    assert status["started_at"] <= status["finished_at"]


def test_service_bytes_equal_in_process_bytes(client: TestClient, tiny_models_dir: Path) -> None:
    job = client.post("/v1/jobs", json={"count": 40, "seed": 123, "truncation": 1.5}).json()
    members = tar_members(client.get(f"/v1/jobs/{job['id']}/result").content)
    model = ModelRegistry.from_directory(tiny_models_dir, "tiny").default
    local = render(model, RenderSpec(seed=123, truncation=1.5), np.arange(40))
    for sample in local:
        assert members[f"{sample.index:08d}.png"] == sample.data


def test_result_range_selects_indices(client: TestClient) -> None:
    job = client.post("/v1/jobs", json={"count": 100, "seed": 1}).json()
    full = tar_members(client.get(f"/v1/jobs/{job['id']}/result").content)
    part = tar_members(client.get(f"/v1/jobs/{job['id']}/result", params={"start": 30, "stop": 70}).content)
    assert sorted(part) == sorted(n for n in full if 30 <= int(n[:8]) < 70)
    assert all(part[n] == full[n] for n in part)
    bad = client.get(f"/v1/jobs/{job['id']}/result", params={"start": 50, "stop": 20})
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_request"


def test_formats(client: TestClient) -> None:
    for fmt, ext, check in [("jpeg", "jpg", b"\xff\xd8"), ("webp", "webp", b"RIFF"), ("npy", "npy", b"\x93NUMPY")]:
        job = client.post("/v1/jobs", json={"count": 3, "seed": 5, "format": fmt, "quality": 80}).json()
        members = tar_members(client.get(f"/v1/jobs/{job['id']}/result").content)
        assert members[f"00000002.{ext}"].startswith(check)


@pytest.mark.parametrize(
    ("body", "status", "code", "fragment"),
    [
        ({"count": 0}, 422, "invalid_request", "count: Input should be greater than or equal to 1"),
        ({"count": 1_000_001}, 422, "invalid_request", "count: Input should be less than or equal to 1000000"),
        ({"count": 5001}, 422, "invalid_request", "count must be at most 5000 on this server"),
        ({"count": 5, "format": "gif"}, 422, "invalid_request", "format: Input should be 'png', 'jpeg', 'webp' or 'npy'"),
        ({"count": 5, "model": "nope"}, 404, "not_found", "unknown model 'nope'"),
        ({"count": 5, "seed": -1}, 422, "invalid_request", "seed: Input should be greater than or equal to 0"),
        ({"count": 5, "truncation": 0}, 422, "invalid_request", "truncation: Input should be greater than 0"),
        ({"count": 5, "colour": "red"}, 422, "invalid_request", "colour: Extra inputs are not permitted"),
        ({}, 422, "invalid_request", "count: Field required"),
    ],
)
def test_bad_bodies_get_the_documented_error(
    client: TestClient, body: dict[str, Any], status: int, code: str, fragment: str
) -> None:
    response = client.post("/v1/jobs", json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and fragment in error["message"], error
    assert isinstance(error["details"], dict)


def test_malformed_json_and_unknown_routes(client: TestClient) -> None:
    response = client.post("/v1/jobs", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 422 and response.json()["error"]["code"] == "invalid_request"
    response = client.get("/v1/jobs/does-not-exist-at-all")
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    response = client.get("/v1/jobs/..%2F..%2Fetc%2Fpasswd")
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    response = client.get("/v1/nothing-here")
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"


def test_single_image_is_deterministic_and_cacheable(client: TestClient) -> None:
    first = client.get("/v1/images/77.png", params={"index": 3})
    assert first.status_code == 200 and first.headers["content-type"] == "image/png"
    assert first.headers["cache-control"] == "public, max-age=31536000, immutable"
    etag = first.headers["etag"]
    again = client.get("/v1/images/77.png", params={"index": 3})
    assert again.content == first.content and again.headers["etag"] == etag
    assert client.get("/v1/images/77.png", params={"index": 3}, headers={"if-none-match": etag}).status_code == 304
    other = client.get("/v1/images/77.png", params={"index": 4})
    assert other.headers["etag"] != etag and other.content != first.content

    job = client.post("/v1/jobs", json={"count": 4, "seed": 77}).json()
    members = tar_members(client.get(f"/v1/jobs/{job['id']}/result").content)
    assert members["00000003.png"] == first.content

    bad = client.get("/v1/images/abc.png")
    assert bad.status_code == 404 and "expected /v1/images/{seed}" in bad.json()["error"]["message"]
    big = client.get(f"/v1/images/{2**63}.png")
    assert big.status_code == 422 and "seed must be in" in big.json()["error"]["message"]


def test_models_health_readiness_and_metrics(client: TestClient) -> None:
    models = client.get("/v1/models").json()["models"]
    assert models == [
        {
            "name": "tiny",
            "version": "1",
            "sha256": models[0]["sha256"],
            "latent_dim": 8,
            "image": {"height": 32, "width": 32, "channels": 3},
            "prior": {"kind": "gaussian", "std": 1.0},
            "default": True,
            "provider": "CPUExecutionProvider",
            "uniqueness_threshold": models[0]["uniqueness_threshold"],
            "attributes": {},  # unconditional
            "identity_attributes": [],
            "classifier": None,
        }
    ]
    assert models[0]["uniqueness_threshold"] > 0
    assert len(models[0]["sha256"]) == 64
    assert client.get("/healthz").json()["status"] == "ok"
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {"models": "ok", "redis": "ok", "worker": "ok"}

    job = client.post("/v1/jobs", json={"count": 10, "seed": 2}).json()
    client.get(f"/v1/jobs/{job['id']}/result")
    text = client.get("/metrics").text
    assert 'synthgen_images_generated_total{format="png",model="tiny@1"}' in text
    assert 'synthgen_http_requests_total{method="POST",route="/v1/jobs",status="202"}' in text
    assert 'synthgen_queue_lag{priority="bulk"}' in text


def test_cancel_stops_a_job(client_factory: ClientFactory) -> None:
    client = client_factory(batch_wait_ms=50.0, worker_concurrency=1, chunk_size=8)
    job = client.post("/v1/jobs", json={"count": 4000, "seed": 3}).json()
    cancelled = client.delete(f"/v1/jobs/{job['id']}")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    time.sleep(0.5)
    done_then = client.get(f"/v1/jobs/{job['id']}").json()["done"]
    time.sleep(0.5)
    status = client.get(f"/v1/jobs/{job['id']}").json()
    assert status["status"] == "cancelled" and status["done"] == done_then < 4000
    conflict = client.get(f"/v1/jobs/{job['id']}/result")
    assert conflict.status_code == 409 and conflict.json()["error"]["code"] == "conflict"


def test_redis_down_gives_503_not_500(client: TestClient, redis_factory: Callable[..., Any]) -> None:
    runtime = client.app.state.runtime  # type: ignore[attr-defined]
    # point the app at a server that is then stopped
    dead = redis_factory()
    import redis.asyncio as aioredis

    original = runtime.queue.redis
    runtime.queue.redis = aioredis.from_url(dead.url, socket_connect_timeout=1)
    dead.stop()
    try:
        response = client.post("/v1/jobs", json={"count": 3})
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "unavailable" and response.headers["retry-after"]
    finally:
        runtime.queue.redis = original
