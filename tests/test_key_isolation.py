"""Key isolation and secrets: every /v1 route with no key, a wrong key and another tenant's key; the key
comparison's constant time; and no key (or its digest) in any log line, metric or Redis key."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import random
import re
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from service.api import keys as auth
from service.api.keys import KeyRing
from synthgen.core.errors import Unauthorized
from tests.support.jobs import wait_job
from tests.support.live import LiveService

KEY_A, KEY_B, VIEWER = "tenant-a-key-0123456789", "tenant-b-key-9876543210", "viewer-key-0123456789"
WRONG = "tenant-a-key-0123456780"  # one character off KEY_A
A = {"Authorization": f"Bearer {KEY_A}"}
B = {"Authorization": f"Bearer {KEY_B}"}
SECRETS = [KEY_A, KEY_B, VIEWER, WRONG, *(hashlib.sha256(k.encode()).hexdigest() for k in (KEY_A, KEY_B, VIEWER, WRONG))]

# One concrete request per /v1 route; {job} is a job of tenant A. A route added to the app without a row
# here fails test_the_matrix_covers_every_route.
REQUESTS: dict[tuple[str, str], tuple[str, dict[str, Any] | None]] = {
    ("GET", "/v1/models"): ("/v1/models", None),
    ("POST", "/v1/jobs"): ("/v1/jobs", {"count": 2, "seed": 5}),
    ("GET", "/v1/jobs/{job_id}"): ("/v1/jobs/{job}", None),
    ("DELETE", "/v1/jobs/{job_id}"): ("/v1/jobs/{job}", None),
    ("GET", "/v1/jobs/{job_id}/result"): ("/v1/jobs/{job}/result", None),
    ("GET", "/v1/jobs/{job_id}/card"): ("/v1/jobs/{job}/card", None),
    ("GET", "/v1/jobs/{job_id}/images/{index}"): ("/v1/jobs/{job}/images/0", None),
    ("GET", "/v1/images/{filename}"): ("/v1/images/7.png", None),
    ("POST", "/v1/interpolate"): ("/v1/interpolate", {"from_seed": 1, "to_seed": 2, "steps": 3}),
}


@pytest.fixture
def keyed(app_factory: Callable[..., TestClient]) -> TestClient:
    return app_factory(api_keys=f"{KEY_A},{KEY_B}", read_only_api_keys=VIEWER, chunk_size=8, metrics_require_key=True)


def _api_routes(routes: list[Any]) -> Iterator[APIRoute]:
    for route in routes:
        included = getattr(route, "original_router", None)  # FastAPI keeps included routers whole
        if included is not None:
            yield from _api_routes(included.routes)
        elif isinstance(route, APIRoute):
            yield route


def test_the_matrix_covers_every_route(keyed: TestClient) -> None:
    app: Any = keyed.app
    routes = {(m, r.path) for r in _api_routes(app.routes) if r.path.startswith("/v1") for m in r.methods}
    documented = {(m.upper(), path) for path, item in app.openapi()["paths"].items() if path.startswith("/v1") for m in item}
    assert routes == documented == set(REQUESTS)


def _job_of_a(client: TestClient) -> str:
    job = client.post("/v1/jobs", json={"count": 20, "seed": 3}, headers=A).json()
    wait_job(client, job["id"], lambda j: j["status"] == "succeeded", timeout_s=60, headers=A)
    return str(job["id"])


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="no-key"),
        pytest.param({"Authorization": f"Bearer {WRONG}"}, id="wrong-key"),
        pytest.param({"Authorization": f"Basic {KEY_A}"}, id="wrong-scheme"),
        pytest.param({"Authorization": "Bearer "}, id="empty-key"),
        pytest.param({"Authorization": f"Bearer {KEY_A}x"}, id="key-with-suffix"),
    ],
)
def test_every_route_refuses_a_missing_or_wrong_key(keyed: TestClient, headers: dict[str, str]) -> None:
    job = _job_of_a(keyed)
    for (method, _), (path, body) in REQUESTS.items():
        response = keyed.request(method, path.format(job=job), json=body, headers=headers)
        assert response.status_code == 401, (method, path, response.status_code)
        assert response.json()["error"]["code"] == "unauthorized" and response.headers["www-authenticate"] == "Bearer"
        assert job not in response.text
    assert keyed.request("GET", "/metrics", headers=headers).status_code == 401
    assert keyed.get(f"/v1/jobs/{job}", headers=A).json()["status"] == "succeeded"  # nothing was cancelled


def test_another_tenants_key_sees_nothing_of_the_first(keyed: TestClient) -> None:
    job = _job_of_a(keyed)
    mine = keyed.get(f"/v1/jobs/{job}/result", headers=A).content
    absent = "A" * 22  # a well-formed id of no job
    for (method, template), (path, body) in REQUESTS.items():
        response = keyed.request(method, path.format(job=job), json=body, headers=B)
        assert mine[:512] not in response.content
        if "{job_id}" in template:
            # exactly what a job that does not exist gets, so B cannot even learn that the id exists
            nothing = keyed.request(method, path.format(job=absent), json=body, headers=B)
            assert response.status_code == nothing.status_code == 404, (method, template)
            assert response.json()["error"]["code"] == "not_found"
            assert response.json()["error"]["message"].replace(job, "ID") == nothing.json()["error"]["message"].replace(
                absent, "ID"
            )
        else:
            assert response.status_code in (200, 202), (method, template, response.text[:200])
            assert job not in response.text
    assert keyed.get(f"/v1/jobs/{job}", headers=A).json()["status"] == "succeeded"  # B's DELETE did nothing
    assert keyed.get(f"/v1/jobs/{job}/result", headers=A).content == mine
    # and the other way round: B's jobs are as invisible to A
    theirs = keyed.post("/v1/jobs", json={"count": 1}, headers=B).json()["id"]
    assert keyed.get(f"/v1/jobs/{theirs}", headers=A).status_code == 404


def test_a_read_only_key_reads_and_cannot_write(keyed: TestClient) -> None:
    viewer = {"Authorization": f"Bearer {VIEWER}"}
    job = _job_of_a(keyed)
    for (method, template), (path, body) in REQUESTS.items():
        response = keyed.request(method, path.format(job=job), json=body, headers=viewer)
        if (method, template) in {("POST", "/v1/jobs"), ("DELETE", "/v1/jobs/{job_id}")}:
            assert response.status_code == 403 and response.json()["error"]["code"] == "forbidden"
        elif "{job_id}" in template:
            assert response.status_code == 404  # a viewer key is a tenant of its own
        else:
            assert response.status_code == 200, (method, template)


# Constant-time comparison


def test_a_presented_key_is_hashed_and_compared_with_every_stored_digest(monkeypatch: pytest.MonkeyPatch) -> None:
    keys = [f"stored-key-{i:04d}-abcdefgh" for i in range(16)]
    ring = KeyRing.load(",".join(keys), None)
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", counting)
    presented = [keys[0], keys[-1], keys[7], "stored-key-0000-abcdefgX", "x" * 8, "y" * 4096]
    for key in presented:
        calls.clear()
        try:
            ring.caller(f"Bearer {key}")
        except Unauthorized:
            assert key not in keys
        assert len(calls) == len(keys), f"{len(calls)} comparisons for {key[:20]!r}: an early exit"
        assert all(len(a) == len(b) == 32 for a, b in calls)  # digests only, never the key itself
        assert all(key.encode() not in a + b for a, b in calls)


def test_key_comparison_time_depends_neither_on_which_key_nor_on_how_close(monkeypatch: pytest.MonkeyPatch) -> None:
    """Medians of interleaved batches: the first stored key against the last, and a near miss against a far one.
    The bound is loose (a 1.5x ratio) so that a noisy machine cannot fail it; an early exit after the first
    of 32 keys, or a comparison that stops at the first different byte, is slower or faster by far more."""
    keys = [f"stored-key-{i:04d}-" + "k" * 40 for i in range(32)]
    ring = KeyRing.load(",".join(keys), None)
    cases = {
        "first": f"Bearer {keys[0]}",
        "last": f"Bearer {keys[-1]}",
        "near-miss": f"Bearer {keys[0][:-1]}X",
        "far-miss": "Bearer " + "z" * len(keys[0]),
    }

    def batch(header: str, n: int = 200) -> float:
        started = time.perf_counter()
        for _ in range(n):
            with contextlib.suppress(Unauthorized):
                ring.caller(header)
        return time.perf_counter() - started

    timings: dict[str, list[float]] = {name: [] for name in cases}
    rng = random.Random(0)
    for _ in range(41):
        order = list(cases)
        rng.shuffle(order)
        for name in order:
            timings[name].append(batch(cases[name]))
    median = {name: statistics.median(values) for name, values in timings.items()}
    for a, b in (("first", "last"), ("near-miss", "far-miss")):
        ratio = max(median[a], median[b]) / min(median[a], median[b])
        assert ratio < 1.5, (a, b, median)


# Secrets in logs, metrics and Redis


def _assert_no_secret(text: str, where: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"a key or its digest appears in {where}"


def test_no_key_in_logs_metrics_or_redis(keyed: TestClient, caplog: pytest.LogCaptureFixture, redis_url: str) -> None:
    import redis

    caplog.set_level(logging.DEBUG)
    viewer = {"Authorization": f"Bearer {VIEWER}"}
    job = _job_of_a(keyed)
    for headers in (A, B, viewer, {"Authorization": f"Bearer {WRONG}"}, {"Authorization": f"Basic {KEY_A}"}):
        for (method, _), (path, body) in REQUESTS.items():
            keyed.request(method, path.format(job=job), json=body, headers=headers)
        keyed.post("/v1/jobs", json={"count": 0}, headers=headers)  # 422
        keyed.get("/v1/jobs/not-a-job-id-at-all", headers=headers)  # 404
    metrics = keyed.get("/metrics", headers=A)
    assert metrics.status_code == 200
    _assert_no_secret(caplog.text, "a log record")
    _assert_no_secret(metrics.text, "/metrics")
    labels = re.findall(r'="([^"]*)"', metrics.text)
    assert labels and not [v for v in labels if re.fullmatch(r"[0-9a-f]{16,}", v)], "a tenant id in a metric label"
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter():
        _assert_no_secret(key.decode(errors="replace"), f"the Redis key {key!r}")
        if client.type(key) == b"hash":
            _assert_no_secret(str(client.hgetall(key)), f"the Redis hash {key!r}")
    client.close()


def test_no_key_in_the_logs_of_real_processes(live_service: Callable[..., LiveService]) -> None:
    """The api and a worker at DEBUG, uvicorn's access log on: requests with every kind of key."""
    service = live_service(
        workers=1, log_level="DEBUG", SYNTHGEN_LOG_LEVEL="debug", SYNTHGEN_API_KEYS=f"{KEY_A},{KEY_B}",
        SYNTHGEN_READ_ONLY_API_KEYS=VIEWER,
    )  # fmt: skip
    with httpx.Client(base_url=service.base_url, timeout=30) as http:
        job = http.post("/v1/jobs", json={"count": 30, "seed": 2}, headers=A).json()
        wait_job(http, job["id"], lambda j: j["status"] == "succeeded", timeout_s=60, headers=A)
        for key in (KEY_A, KEY_B, VIEWER, WRONG):
            headers = {"Authorization": f"Bearer {key}"}
            for (method, _), (path, body) in REQUESTS.items():
                http.request(method, path.format(job=job["id"]), json=body, headers=headers)
        metrics = http.get("/metrics").text
    worker_metrics = httpx.get(f"http://127.0.0.1:{service.worker_ports[service.workers[0].pid]}/metrics").text
    logs = service.logs()
    assert '"GET /v1/models HTTP/1.1" 200' in logs and "DEBUG" in logs  # the access log and debug lines are there
    _assert_no_secret(logs, "a process log")
    _assert_no_secret(metrics + worker_metrics, "/metrics")
