"""Bad input: oversized bodies, huge counts, bad seeds, NaN and infinite truncation, unicode and
path-traversal model names and job ids, and slow clients. Each gets a clear 4xx in the one error
shape, and the server stays healthy. The slow-client and size tests run against uvicorn on 127.0.0.1."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.support.jobs import wait_job

ERROR_CODES = {400: "invalid_request", 404: "not_found", 408: "request_timeout", 413: "too_large", 422: "invalid_request"}


@pytest.fixture
def api(app_factory: Callable[..., TestClient], tmp_path: Path) -> TestClient:
    # a directory result store, so that a traversal would have files to reach
    return app_factory(with_worker=False, max_count=100_000, result_store=f"dir:{tmp_path / 'results'}")


def _clear_4xx(response: httpx.Response, status: int, *fragments: str) -> dict[str, Any]:
    assert response.status_code == status, (response.status_code, response.text[:500])
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == ERROR_CODES[status] and error["message"] and isinstance(error["details"], dict), error
    for fragment in fragments:
        assert fragment in error["message"], (fragment, error["message"])
    return error


def _raw(client: TestClient, body: bytes) -> httpx.Response:
    return client.post("/v1/jobs", content=body, headers={"content-type": "application/json"})


BAD_JOB_BODIES = [
    (b'{"count": 1000001}', "count: Input should be less than or equal to 1000000"),
    (b'{"count": 100001}', "count must be at most 100000 on this server"),
    (b'{"count": 100000000000000000000000000000}', "count: Input should be less than or equal to 1000000"),
    (b'{"count": 1e300}', "count"),
    (b'{"count": -5}', "count: Input should be greater than or equal to 1"),
    (b'{"count": "many"}', "count: Input should be a valid integer"),
    (b'{"count": 1.5}', "count"),
    (b'{"count": 5, "seed": -1}', "seed: Input should be greater than or equal to 0"),
    (b'{"count": 5, "seed": 9223372036854775808}', "seed: Input should be less than or equal to 9223372036854775807"),
    (b'{"count": 5, "seed": 18446744073709551616}', "seed"),
    (b'{"count": 5, "seed": 1e100}', "seed"),
    (b'{"count": 5, "truncation": NaN}', "truncation"),
    (b'{"count": 5, "truncation": Infinity}', "truncation"),
    (b'{"count": 5, "truncation": -Infinity}', "truncation"),
    (b'{"count": 5, "truncation": 1e999}', "truncation"),
    (b'{"count": 5, "truncation": -1}', "truncation: Input should be greater than 0"),
    (b'{"count": 5, "quality": 0}', "quality"),
    (b'{"count": 5, "model": "' + b"m" * 129 + b'"}', "model: String should have at most 128 characters"),
    (b'{"count": 5, "collection": "../../etc"}', "collection: String should match pattern"),
    (b"[1, 2, 3]", "Input should be a valid dictionary"),
    (b'"count"', "Input should be a valid dictionary"),
    (b"null", "Input should be a valid dictionary"),
]


def test_bad_job_bodies_get_a_clear_422(api: TestClient) -> None:
    for body, fragment in BAD_JOB_BODIES:
        _clear_4xx(_raw(api, body), 422, fragment)
    assert api.get("/healthz").status_code == 200


@pytest.mark.parametrize("body", [b"{not json", b'{"count": 1', b"\xff\xfe{}", b'{"count": 1}\x00garbage', b"", b"\x00" * 100])
def test_malformed_json_gets_a_clear_4xx(api: TestClient, body: bytes) -> None:
    response = _raw(api, body)
    assert response.status_code in (400, 422), response.text
    _clear_4xx(response, response.status_code)


def test_interpolation_rejects_bad_numbers(api: TestClient) -> None:
    for body in (
        b'{"from_seed": 1, "to_seed": 2, "truncation": NaN}',
        b'{"from_seed": 1, "to_seed": 2, "truncation": Infinity}',
        b'{"from_seed": -1, "to_seed": 2}',
        b'{"from_seed": 1, "to_seed": 99999999999999999999999}',
        b'{"from_seed": 1, "to_seed": 2, "steps": 100000}',
        b'{"from_seed": 1, "to_seed": 2, "to_index": -3}',
    ):
        _clear_4xx(api.post("/v1/interpolate", content=body, headers={"content-type": "application/json"}), 422)


BAD_IMAGE_REQUESTS = [
    ("/v1/images/-1.png", 404),
    ("/v1/images/1e5.png", 404),
    ("/v1/images/9223372036854775808.png", 422),
    ("/v1/images/99999999999999999999.png", 422),
    ("/v1/images/999999999999999999999.png", 404),
    ("/v1/images/1.png?truncation=nan", 422),
    ("/v1/images/1.png?truncation=inf", 422),
    ("/v1/images/1.png?truncation=-inf", 422),
    ("/v1/images/1.png?truncation=1e999", 422),
    ("/v1/images/1.png?truncation=0", 422),
    ("/v1/images/1.png?index=-1", 422),
    ("/v1/images/1.png?index=9223372036854775808", 422),
    ("/v1/images/1.png?quality=101", 422),
    ("/v1/images/1.gif", 404),
    ("/v1/images/..%2F..%2Fetc%2Fpasswd", 404),
    ("/v1/images/1.png%00.txt", 404),
]


def test_bad_image_requests_get_a_clear_4xx(api: TestClient) -> None:
    for path, status in BAD_IMAGE_REQUESTS:
        _clear_4xx(api.get(path), status)


UNICODE_AND_TRAVERSAL_NAMES = [
    "модель",
    "模型",
    "😀",
    "tiny\u200b",  # a zero-width space
    "\u202etiny",  # right-to-left override
    "tiny\u0000",
    "tiny\r\nX-Injected: 1",
    "e\u0301",  # combining accent
    "../../../../etc/passwd",
    "..\\..\\windows\\win.ini",
    "tiny/../tiny",
    "/etc/passwd",
    "tiny@../../1",
    "%2e%2e%2f%2e%2e%2f",
    "tiny@1/../../manifest.json",
]


def test_unicode_and_traversal_model_names_are_unknown_models(api: TestClient) -> None:
    for name in UNICODE_AND_TRAVERSAL_NAMES:
        error = _clear_4xx(api.post("/v1/jobs", json={"count": 1, "model": name}), 404, "unknown model")
        assert error["details"]["model"] == name  # echoed as given, in valid JSON
        _clear_4xx(api.get("/v1/images/1.png", params={"model": name}), 404, "unknown model")
        body = {"from_seed": 1, "to_seed": 2, "model": name}
        _clear_4xx(api.post("/v1/interpolate", json=body), 404, "unknown model")


ODD_JOB_IDS = [
    "..%2F..%2Fetc%2Fpasswd",
    "%2e%2e",
    "....%2F%2F....%2F%2Fetc",
    "a%00b0000000000",
    "%3Cscript%3Ealert(1)%3C%2Fscript%3E",
    "x" * 10_000,
    "synthgen:job:*",
    "%E2%80%AEdi-boj-yrev",
    "*",
]


def test_traversal_and_odd_job_ids_are_not_found(api: TestClient, tmp_path: Path) -> None:
    outside = tmp_path / "results" / "00000000.tar"
    outside.parent.mkdir(parents=True, exist_ok=True)
    outside.write_bytes(b"must never be served")
    for job_id in ODD_JOB_IDS:
        for method, suffix in [("GET", ""), ("GET", "/result"), ("GET", "/images/0"), ("DELETE", "")]:
            response = api.request(method, f"/v1/jobs/{job_id}{suffix}")
            assert response.status_code in (404, 422), (job_id[:40], method, suffix, response.status_code)
            assert b"must never be served" not in response.content
            _clear_4xx(response, response.status_code)
            assert len(response.content) < 2000  # a huge id is not echoed back in full


# Real server: sizes and slow clients.


@pytest.fixture
def server(live_app: Callable[..., str]) -> str:
    return live_app(with_worker=True, max_body_bytes=4096, body_timeout_s=1.5, chunk_size=64)


def _healthy(base_url: str) -> None:
    with httpx.Client(base_url=base_url, timeout=10) as http:
        assert http.get("/healthz").status_code == 200
        job = http.post("/v1/jobs", json={"count": 3, "seed": 1})
        assert job.status_code == 202
        assert wait_job(http, job.json()["id"], lambda j: j["status"] == "succeeded", timeout_s=30)


def test_oversized_bodies_declared_or_streamed_get_413(server: str) -> None:
    big = b'{"count": 1, "model": "' + b"x" * 10_000 + b'"}'
    with httpx.Client(base_url=server, timeout=10) as http:
        _clear_4xx(http.post("/v1/jobs", content=big, headers={"content-type": "application/json"}), 413, "4096 bytes")

        def chunks() -> Iterator[bytes]:  # no Content-Length: chunked transfer encoding
            for i in range(0, len(big), 1000):
                yield big[i : i + 1000]

        _clear_4xx(http.post("/v1/jobs", content=chunks(), headers={"content-type": "application/json"}), 413)
    _healthy(server)


def _connect(base_url: str) -> socket.socket:
    host, port = base_url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def _read_response(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_a_slow_body_gets_408_and_its_connection_is_closed(server: str) -> None:
    sock = _connect(server)
    started = time.monotonic()
    sock.sendall(b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 40\r\n\r\n")
    sock.sendall(b'{"count"')  # and then nothing more
    response = _read_response(sock)  # the server answers, then closes the connection
    sock.close()
    assert response.startswith(b"HTTP/1.1 408"), response[:200]
    assert b'"code":"request_timeout"' in response and b"1.5 s" in response
    assert time.monotonic() - started < 10
    _healthy(server)


def test_a_dribbling_body_is_cut_at_the_deadline_not_per_byte(server: str) -> None:
    sock = _connect(server)
    started = time.monotonic()
    sock.sendall(b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n")
    sock.settimeout(0.2)
    response = b""
    for _ in range(40):  # one byte every 0.2 s: each read is quick, the whole body is not
        try:
            sock.sendall(b" ")
            response += sock.recv(65536)
        except (TimeoutError, BrokenPipeError, ConnectionResetError):
            pass
        if response:
            break
    sock.close()
    assert response.startswith(b"HTTP/1.1 408"), response[:200]
    assert time.monotonic() - started < 5


def test_many_slow_and_abandoned_clients_leave_the_server_healthy(server: str) -> None:
    """Slow-loris connections (headers sent a few bytes at a time, never finished), bodies abandoned half
    way, and a result download nobody reads: other clients are still served at once."""
    idle = []
    for i in range(40):
        sock = _connect(server)
        sock.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Slow: " + str(i).encode())
        idle.append(sock)
    for _ in range(5):
        half = _connect(server)
        half.sendall(b'POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"cou')
        half.close()
    with httpx.Client(base_url=server, timeout=30) as http:
        job = http.post("/v1/jobs", json={"count": 2000, "seed": 3}).json()
    reader = _connect(server)  # asks for a big result, reads nothing
    reader.sendall(f"GET /v1/jobs/{job['id']}/result HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    started = time.monotonic()
    _healthy(server)
    assert time.monotonic() - started < 20
    for sock in idle:
        sock.sendall(b"\r\n\r\n")  # finishing the headers late still gets a proper answer
    answers = [_first_line(sock) for sock in idle]
    assert all(a.startswith(b"HTTP/1.1 200") for a in answers), answers[:3]
    for sock in [*idle, reader]:
        sock.close()
    _healthy(server)


def _first_line(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.split(b"\r\n", 1)[0]
