"""API keys, quotas and job ownership; interpolation; one image of a job; request size limits."""

from __future__ import annotations

import io
import tarfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.api.keys import KeyRing

KEY_A, KEY_B = "key-a-0123456789", "key-b-0123456789"
A = {"Authorization": f"Bearer {KEY_A}"}
B = {"Authorization": f"Bearer {KEY_B}"}


@pytest.fixture
def keyed(app_factory: Callable[..., TestClient]) -> TestClient:
    return app_factory(api_keys=f"{KEY_A},{KEY_B}", chunk_size=16)


def _finish(client: TestClient, job_id: str, headers: dict[str, str]) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        job: dict[str, Any] = client.get(f"/v1/jobs/{job_id}", headers=headers).json()
        if job["status"] == "succeeded":
            return job
        time.sleep(0.05)
    raise AssertionError("job did not finish")


def test_every_v1_route_needs_a_valid_key(keyed: TestClient) -> None:
    job = keyed.post("/v1/jobs", json={"count": 4}, headers=A).json()
    routes = [
        ("GET", "/v1/models", None),
        ("POST", "/v1/jobs", {"count": 1}),
        ("GET", f"/v1/jobs/{job['id']}", None),
        ("GET", f"/v1/jobs/{job['id']}/result", None),
        ("GET", f"/v1/jobs/{job['id']}/images/0", None),
        ("DELETE", f"/v1/jobs/{job['id']}", None),
        ("GET", "/v1/images/1.png", None),
        ("POST", "/v1/interpolate", {"from_seed": 1, "to_seed": 2}),
    ]
    for headers in ({}, {"Authorization": "Bearer wrong-key-000000"}, {"Authorization": f"Basic {KEY_A}"}):
        for method, path, body in routes:
            response = keyed.request(method, path, json=body, headers=headers)
            assert response.status_code == 401, (method, path, headers, response.text)
            assert response.json()["error"]["code"] == "unauthorized" and response.headers["www-authenticate"] == "Bearer"
    assert keyed.get("/healthz").status_code == 200 and keyed.get("/readyz").status_code == 200
    assert keyed.get("/metrics").status_code == 200  # open unless SYNTHGEN_METRICS_REQUIRE_KEY


def test_another_tenants_job_is_not_found(keyed: TestClient) -> None:
    job = keyed.post("/v1/jobs", json={"count": 4}, headers=A).json()
    _finish(keyed, job["id"], A)
    for method, suffix in [("GET", ""), ("GET", "/result"), ("GET", "/images/0"), ("DELETE", "")]:
        response = keyed.request(method, f"/v1/jobs/{job['id']}{suffix}", headers=B)
        assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
        assert KEY_A not in response.text
    assert keyed.get(f"/v1/jobs/{job['id']}", headers=A).json()["status"] == "succeeded"


def test_keys_are_kept_hashed_and_never_logged(keyed: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    ring: KeyRing = keyed.app.state.runtime.keyring  # type: ignore[attr-defined]
    assert all(isinstance(d, bytes) and len(d) == 32 for d in ring.digests)
    assert KEY_A.encode() not in b"".join(ring.digests)
    keyed.post("/v1/jobs", json={"count": 2}, headers=A)
    keyed.get("/v1/models", headers={"Authorization": "Bearer not-a-key-000"})
    assert KEY_A not in caplog.text and KEY_A not in keyed.get("/metrics").text


def test_daily_and_concurrency_quotas(app_factory: Callable[..., TestClient]) -> None:
    client = app_factory(with_worker=False, api_keys=KEY_A, quota_images_per_day=100, quota_concurrent_jobs=2)
    first = client.post("/v1/jobs", json={"count": 60}, headers=A)
    assert first.status_code == 202
    over = client.post("/v1/jobs", json={"count": 50}, headers=A)
    assert over.status_code == 429 and over.json()["error"]["code"] == "quota_exceeded"
    assert 1 <= int(over.headers["retry-after"]) <= 86_401
    assert client.post("/v1/jobs", json={"count": 30}, headers=A).status_code == 202
    busy = client.post("/v1/jobs", json={"count": 1}, headers=A)
    assert busy.status_code == 429 and busy.json()["error"]["details"]["quota"] == "concurrent_jobs"
    client.delete(f"/v1/jobs/{first.json()['id']}", headers=A)
    assert client.post("/v1/jobs", json={"count": 10}, headers=A).status_code == 202  # 100 of 100 used


def test_short_keys_are_refused_at_start() -> None:
    with pytest.raises(ValueError, match="at least 8 characters"):
        KeyRing.load("short", None)
    assert not KeyRing.load("", None).enabled


def test_interpolation_strip_and_tar(app_factory: Callable[..., TestClient]) -> None:
    client = app_factory()
    body = {"from_seed": 3, "to_seed": 4, "steps": 5, "method": "slerp"}
    strip = client.post("/v1/interpolate?layout=strip", json=body)
    assert strip.status_code == 200 and strip.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(strip.content)).size == (5 * 32, 32)
    tar = client.post("/v1/interpolate", json={**body, "method": "lerp"})
    with tarfile.open(fileobj=io.BytesIO(tar.content)) as archive:
        names = archive.getnames()
        first = archive.extractfile("00000000.png").read()  # type: ignore[union-attr]
    assert names[:2] == ["00000000.png", "00000000.json"] and len(names) == 10
    # the path starts at image 0 of seed 3 and ends at image 0 of seed 4, exactly
    assert first == client.get("/v1/images/3.png").content
    bad = client.post("/v1/interpolate", json={**body, "steps": 1})
    assert bad.status_code == 422 and "steps" in bad.json()["error"]["message"]


def test_one_image_of_a_job(app_factory: Callable[..., TestClient]) -> None:
    client = app_factory(chunk_size=8)
    job = client.post("/v1/jobs", json={"count": 20, "seed": 9}).json()
    _finish(client, job["id"], {})
    image = client.get(f"/v1/jobs/{job['id']}/images/13")
    assert image.status_code == 200 and image.headers["content-type"] == "image/png"
    assert image.content == client.get("/v1/images/9.png", params={"index": 13}).content
    assert np.asarray(Image.open(io.BytesIO(image.content))).shape == (32, 32, 3)
    out_of_range = client.get(f"/v1/jobs/{job['id']}/images/20")
    assert out_of_range.status_code == 422 and "index must be in [0, 20)" in out_of_range.json()["error"]["message"]


def test_oversized_bodies_are_refused(app_factory: Callable[..., TestClient]) -> None:
    client = app_factory(with_worker=False, max_body_bytes=2048)
    response = client.post(
        "/v1/jobs", content=b'{"count": 1, "model": "' + b"x" * 5000 + b'"}', headers={"content-type": "application/json"}
    )
    assert response.status_code == 413 and response.json()["error"]["code"] == "too_large"
    assert client.get("/healthz").status_code == 200


def test_cors_is_configurable(app_factory: Callable[..., TestClient]) -> None:
    client = app_factory(with_worker=False, cors_origins="https://crowds.example")
    response = client.options("/v1/jobs", headers={"Origin": "https://crowds.example", "Access-Control-Request-Method": "POST"})
    assert response.headers["access-control-allow-origin"] == "https://crowds.example"
    other = client.options("/v1/jobs", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in other.headers


def test_read_only_keys_get_403_on_writes(app_factory: Callable[..., TestClient]) -> None:
    viewer = {"Authorization": "Bearer viewer-key-0001"}
    client = app_factory(with_worker=False, api_keys=KEY_A, read_only_api_keys="viewer-key-0001")
    assert client.get("/v1/models", headers=viewer).status_code == 200
    assert client.get("/v1/images/1.png", headers=viewer).status_code == 200
    refused = client.post("/v1/jobs", json={"count": 1}, headers=viewer)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
    assert "read-only" in refused.json()["error"]["message"]
    job = client.post("/v1/jobs", json={"count": 1}, headers=A).json()
    assert client.delete(f"/v1/jobs/{job['id']}", headers=viewer).status_code == 403


def test_a_body_that_is_not_json_text_gets_400(app_factory: Callable[..., TestClient]) -> None:
    client = app_factory(with_worker=False)
    response = client.post("/v1/jobs", content=b"\xe9", headers={"content-type": "application/json"})
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_request"
