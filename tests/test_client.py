"""The Python client and ``synthgen generate --server``, against a real server: uvicorn on 127.0.0.1
with the tiny model, a worker and a real redis-server."""

from __future__ import annotations

import asyncio
import io
import json
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
import redis

from service.api.app import create_app
from service.queue import keys as K
from service.settings import Settings
from synthgen.cli import main
from synthgen.client import (
    AsyncSynthgenClient,
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    QueueFullError,
    SynthgenAPIError,
    SynthgenClient,
    SynthgenConnectionError,
    SynthgenProtocolError,
    TarSampleReader,
    UnauthorizedError,
    UnavailableError,
)
from synthgen.remote import STATE_FILE
from tests.support.jobs import tar_names
from tests.support.live import in_api_decode_without_worker

ASGIApp = Callable[..., Any]


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]
    authorization: str | None


@dataclass
class LiveServer:
    url: str
    seen: list[Seen]

    def result_queries(self, since: int = 0) -> list[dict[str, str]]:
        return [s.query for s in self.seen[since:] if s.method == "GET" and s.path.endswith("/result")]

    def job_posts(self, since: int = 0) -> int:
        return sum(1 for s in self.seen[since:] if s.method == "POST" and s.path == "/v1/jobs")


def _recording(app: ASGIApp, seen: list[Seen]) -> ASGIApp:
    async def recorded(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = dict(scope["headers"])
            auth = headers.get(b"authorization")
            query = dict(parse_qsl(scope["query_string"].decode()))
            seen.append(Seen(scope["method"], scope["path"], query, auth.decode() if auth else None))
        await app(scope, receive, send)

    return recorded


@pytest.fixture
def serve(redis_url: str, tiny_models_dir: Path, uvicorn_thread: Callable[[ASGIApp], str]) -> Callable[..., LiveServer]:
    """Start real servers (uvicorn in a thread, on a free port of 127.0.0.1); all are stopped afterwards."""

    def start(with_worker: bool = True, **overrides: Any) -> LiveServer:
        values: dict[str, Any] = {
            "redis_url": redis_url, "models_dir": tiny_models_dir, "default_model": "tiny", "chunk_size": 32,
            **in_api_decode_without_worker(with_worker), **overrides,
        }  # fmt: skip
        seen: list[Seen] = []
        app = _recording(create_app(Settings(**values), with_worker=with_worker), seen)
        return LiveServer(uvicorn_thread(app), seen)

    return start


def sample_names(indices: range, ext: str = "png") -> list[str]:
    return [f"{i:08d}.{e}" for i in indices for e in (ext, "json")]


def test_sync_client_creates_waits_and_downloads(serve: Callable[..., LiveServer], tmp_path: Path) -> None:
    live = serve()
    with SynthgenClient(live.url) as client:
        [model] = client.models()
        assert model.ref == "tiny@1" and model.default and model.image_shape == (32, 32, 3) and model.latent_dim == 8
        job = client.create_job(40, seed=7)
        assert (job.status, job.seed, job.model, job.count) == ("queued", 7, "tiny@1", 40)
        assert job.links["result"] == f"/v1/jobs/{job.id}/result"
        done = client.wait(job.id, poll_interval=0.05, timeout=30)
        assert done.status == "succeeded" and done.done == 40 and done.finished and done.format == "png"

        size = client.download(job.id, tmp_path / "all.tar")
        whole = httpx.get(f"{live.url}/v1/jobs/{job.id}/result").content
        assert (tmp_path / "all.tar").read_bytes() == whole and size == len(whole)
        assert tar_names(whole) == sample_names(range(40)) and not list(tmp_path.glob(".*"))

        part = b"".join(client.iter_result(job.id, start=10, stop=20))
        assert part == httpx.get(f"{live.url}/v1/jobs/{job.id}/result", params={"start": 10, "stop": 20}).content
        buffer = io.BytesIO()
        client.download(job.id, buffer, start=38)
        assert tar_names(buffer.getvalue()) == sample_names(range(38, 40))

        samples = list(client.iter_samples(job.id, 5, 8))
        assert [s.index for s in samples] == [5, 6, 7] and samples[1].meta["index"] == 6 and samples[1].meta["seed"] == 7
        image = samples[1].files["00000006.png"]
        assert client.image(7, index=6) == image and client.job_image(job.id, 6) == image
        assert client.cancel(job.id).status == "succeeded"  # a finished job stays as it was


def test_async_client_streams_while_the_job_runs(serve: Callable[..., LiveServer]) -> None:
    live = serve()

    async def scenario() -> tuple[bytes, bytes, str]:
        async with AsyncSynthgenClient(live.url) as client:
            assert [m.ref for m in await client.models()] == ["tiny@1"]
            job = await client.create_job(70, seed=3, format="jpeg", quality=80)
            buffer = io.BytesIO()
            await client.download(job.id, buffer)  # starts before the job is done
            done = await client.wait(job.id, poll_interval=0.05, timeout=30)
            tail = b"".join([chunk async for chunk in client.iter_result(job.id, 60)])
            with pytest.raises(NotFoundError):
                await client.job("no-such-job-0000")
            return buffer.getvalue(), tail, done.status

    whole, tail, status = asyncio.run(scenario())
    assert status == "succeeded"
    assert tar_names(whole) == sample_names(range(70), "jpg") and tar_names(tail) == sample_names(range(60, 70), "jpg")
    assert whole.endswith(tail[:-1024] + b"\0" * 1024)


def test_errors_are_typed_and_4xx_are_not_retried(serve: Callable[..., LiveServer]) -> None:
    live = serve(with_worker=False)
    delays: list[float] = []
    with SynthgenClient(live.url, sleep=delays.append) as client:
        with pytest.raises(NotFoundError) as missing:
            client.job("no-such-job-0000")
        assert (missing.value.status, missing.value.code) == (404, "not_found") and "no-such-job-0000" in missing.value.message
        with pytest.raises(InvalidRequestError) as invalid:
            client.create_job(0)
        assert invalid.value.status == 422 and invalid.value.details["errors"][0]["field"] == "count"
        with pytest.raises(NotFoundError, match="nope"):
            client.create_job(1, model="nope")
        job = client.create_job(10, seed=1)
        with pytest.raises(InvalidRequestError, match="stop <= 10"):
            list(client.iter_result(job.id, start=5, stop=11))
        with pytest.raises(ValueError, match="start < stop"):
            list(client.iter_result(job.id, start=5, stop=3))
        client.cancel(job.id)
        with pytest.raises(ConflictError) as conflict:
            list(client.iter_result(job.id))
        assert conflict.value.status == 409 and "cancelled" in conflict.value.message
        with pytest.raises(ValueError, match="format"):
            client.image(1, fmt="gif")
    assert delays == [] and sum(s.method == "POST" for s in live.seen) == 3


def test_429_is_retried_after_retry_after(serve: Callable[..., LiveServer]) -> None:
    live = serve(with_worker=False, max_queued_images=100)  # no worker: the queue never drains
    delays: list[float] = []
    with SynthgenClient(live.url, max_retries=2, sleep=delays.append) as client:
        first = client.create_job(80, seed=1)
        with pytest.raises(QueueFullError) as full:
            client.create_job(30)
        assert full.value.status == 429 and full.value.retry_after is not None and full.value.retry_after >= 1
        assert len(delays) == 2 and all(d >= full.value.retry_after for d in delays)
        assert live.job_posts() == 1 + 3  # the first try and two retries

        # while the client waits, room is made: its retry then gets through
        def wait_and_free(delay: float) -> None:
            delays.append(delay)
            client.cancel(first.id)

        delays.clear()
        with SynthgenClient(live.url, max_retries=2, sleep=wait_and_free) as patient:
            job = patient.create_job(30, seed=2)
        assert job.status == "queued" and len(delays) == 1 and delays[0] >= full.value.retry_after


def test_connection_errors_and_gateway_errors_back_off() -> None:
    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    delays: list[float] = []
    unreachable = SynthgenClient(f"http://127.0.0.1:{port}", max_retries=3, backoff_base=0.5, sleep=delays.append)
    with unreachable, pytest.raises(SynthgenConnectionError):
        unreachable.models()
    assert len(delays) == 3 and 0.25 <= delays[0] <= 0.5 and 0.5 <= delays[1] <= 1.0 and 1.0 <= delays[2] <= 2.0

    answers = iter([(502, b"bad gateway"), (504, b""), (503, b'{"error": {"code": "unavailable", "message": "m"}}')])
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.method)
        status, body = next(answers, (200, b'{"models": []}'))
        return httpx.Response(status, content=body, headers={"Retry-After": "7"} if status == 503 else {})

    delays.clear()
    transport = httpx.MockTransport(handler)
    with SynthgenClient("http://synthgen.test", transport=transport, sleep=delays.append) as client:
        assert client.models() == []
        assert len(delays) == 3 and delays[2] >= 7
        with pytest.raises(SynthgenAPIError) as gateway:  # a POST that may have been taken is not repeated on 502
            answers = iter([(502, b"<html>bad gateway</html>")])
            client.create_job(1)
        assert gateway.value.code == "http_502" and "bad gateway" in gateway.value.message
    assert calls == ["GET"] * 4 + ["POST"]
    with SynthgenClient("http://synthgen.test", transport=transport, max_retries=0) as client:
        answers = iter([(503, b'{"error": {"code": "unavailable", "message": "m"}}')])
        with pytest.raises(UnavailableError) as unavailable:
            client.models()
    assert unavailable.value.retry_after == 7


class _CutStream(httpx.SyncByteStream):
    def __init__(self, inner: httpx.SyncByteStream, limit: int, error: BaseException) -> None:
        self.inner, self.limit, self.error = inner, limit, error

    def __iter__(self) -> Iterator[bytes]:
        sent = 0
        for chunk in self.inner:
            if sent + len(chunk) >= self.limit:
                yield chunk[: self.limit - sent]
                raise self.error
            sent += len(chunk)
            yield chunk

    def close(self) -> None:
        self.inner.close()


def cut_result_stream(monkeypatch: pytest.MonkeyPatch, limit: int, error: BaseException) -> None:
    """Make the next result response stop after ``limit`` bytes, raising ``error`` (a drop, or Ctrl-C)."""
    original = httpx.HTTPTransport.handle_request
    armed = [True]

    def handle_request(self: httpx.HTTPTransport, request: httpx.Request) -> httpx.Response:
        response = original(self, request)
        if armed[0] and request.url.path.endswith("/result") and response.status_code == 200:
            armed[0] = False
            assert isinstance(response.stream, httpx.SyncByteStream)
            cut = _CutStream(response.stream, limit, error)
            return httpx.Response(200, headers=response.headers, stream=cut, extensions=response.extensions)
        return response

    monkeypatch.setattr(httpx.HTTPTransport, "handle_request", handle_request)


def whole_samples(data: bytes) -> int:
    return len(TarSampleReader(0).feed(data))


def test_a_dropped_download_resumes_at_the_first_missing_sample(
    serve: Callable[..., LiveServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    live = serve()
    with SynthgenClient(live.url) as client:
        job = client.create_job(100, seed=11)
        client.wait(job.id, poll_interval=0.05, timeout=30)
        whole = b"".join(client.iter_result(job.id))
    limit = len(whole) * 2 // 5
    kept = whole_samples(whole[:limit])
    assert 0 < kept < 100
    cut_result_stream(monkeypatch, limit, httpx.ReadError("connection reset"))
    seen = len(live.seen)
    delays: list[float] = []
    with SynthgenClient(live.url, sleep=delays.append) as client:
        again = b"".join(client.iter_result(job.id))
    assert again == whole and len(delays) == 1
    assert live.result_queries(seen) == [{"start": "0"}, {"start": str(kept), "stop": "100"}]


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if not p.name.startswith(".")}


def test_generate_on_a_server_writes_a_folder_and_shards(
    serve: Callable[..., LiveServer], tiny_models_dir: Path, tmp_path: Path
) -> None:
    live = serve()
    args = ["generate", "--server", live.url, "--count", "50", "--seed", "4", "--model", "tiny"]
    assert main([*args, "--out", str(tmp_path / "folder")]) == 0
    folder = _files(tmp_path / "folder")
    assert sorted(folder) == [f"{i:08d}.png" for i in range(50)] + ["manifest.jsonl"]
    # the same bytes as in-process generation, manifest included
    local = ["generate", "--count", "50", "--seed", "4", "--model", "tiny", "--models-dir", str(tiny_models_dir)]
    assert main([*local, "--out", str(tmp_path / "local")]) == 0
    assert folder == _files(tmp_path / "local")

    assert main([*args, "--shards", "3", "--out", str(tmp_path / "shards")]) == 0
    shards = _files(tmp_path / "shards")
    assert sorted(shards) == ["manifest.jsonl", "shard-00000.tar", "shard-00001.tar", "shard-00002.tar"]
    job_id = json.loads((tmp_path / "shards" / STATE_FILE).read_text())["job_id"]
    for name, (start, stop) in zip(sorted(shards)[1:], [(0, 16), (16, 33), (33, 50)], strict=True):
        expected = httpx.get(f"{live.url}/v1/jobs/{job_id}/result", params={"start": start, "stop": stop}).content
        assert shards[name] == expected and tar_names(expected) == sample_names(range(start, stop))
    lines = [json.loads(line) for line in shards["manifest.jsonl"].splitlines()]
    assert [r["index"] for r in lines] == list(range(50)) and lines[20]["shard"] == "shard-00001.tar"
    assert lines[20]["seed"] == 4 and lines[20]["model"] == "tiny@1" and len(lines[20]["latent"]) == 8

    seen = len(live.seen)
    assert main([*args, "--shards", "3", "--out", str(tmp_path / "shards")]) == 0  # already complete: asks nothing
    assert live.seen[seen:] == []


@pytest.mark.parametrize("layout", [[], ["--shards", "3"]], ids=["folder", "shards"])
def test_generate_resumes_after_ctrl_c_with_only_the_missing_range(
    serve: Callable[..., LiveServer], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, layout: list[str]
) -> None:
    live = serve()
    args = ["generate", "--server", live.url, "--count", "100", "--seed", "9", "--format", "webp", *layout]
    assert main([*args, "--out", str(tmp_path / "reference")]) == 0
    reference = _files(tmp_path / "reference")
    reference_job = json.loads((tmp_path / "reference" / STATE_FILE).read_text())["job_id"]
    whole = httpx.get(f"{live.url}/v1/jobs/{reference_job}/result").content
    limit = len(whole) * 2 // 5  # inside the second of three shards

    out = tmp_path / "out"
    with monkeypatch.context() as patch:
        cut_result_stream(patch, limit, KeyboardInterrupt())
        assert main([*args, "--out", str(out)]) == 130
    state = json.loads((out / STATE_FILE).read_text())
    kept = state["next_index"]
    assert 33 < kept < 66 and kept == whole_samples(whole[:limit])
    partial = _files(out)
    if layout:
        assert sorted(partial) == ["manifest.jsonl", "shard-00000.tar"]
    else:
        assert sorted(partial) == [f"{i:08d}.webp" for i in range(kept)] + ["manifest.jsonl"]
        assert not list(out.glob(".*.tmp"))
    assert all(reference[name] == data for name, data in partial.items() if name != "manifest.jsonl")

    seen = len(live.seen)
    assert main([*args, "--out", str(out)]) == 0
    assert live.job_posts(seen) == 0  # the same job, still on the server
    assert live.result_queries(seen) == [{"start": str(kept), "stop": "100"}]
    assert _files(out) == reference


def test_generate_recreates_a_job_the_server_no_longer_has(
    serve: Callable[..., LiveServer], redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    live = serve()
    args = ["generate", "--server", live.url, "--count", "60"]  # no seed: the server picks one, and it is kept
    assert main([*args, "--out", str(tmp_path / "reference"), "--seed", "5"]) == 0
    out = tmp_path / "out"
    with monkeypatch.context() as patch:
        cut_result_stream(patch, 60_000, KeyboardInterrupt())
        assert main([*args, "--seed", "5", "--out", str(out)]) == 130
    state = json.loads((out / STATE_FILE).read_text())
    with redis.Redis.from_url(redis_url) as store:  # the job is gone, as after its retention ends
        assert store.delete(K.job_key(state["job_id"])) == 1
    seen = len(live.seen)
    assert main([*args, "--seed", "5", "--out", str(out)]) == 0
    assert live.job_posts(seen) == 1 and live.result_queries(seen) == [{"start": str(state["next_index"]), "stop": "60"}]
    assert json.loads((out / STATE_FILE).read_text())["job_id"] != state["job_id"]
    assert _files(out) == _files(tmp_path / "reference")

    assert main([*args, "--out", str(tmp_path / "random")]) == 0
    seed = json.loads((tmp_path / "random" / STATE_FILE).read_text())["seed"]
    assert json.loads((tmp_path / "random" / "manifest.jsonl").read_text().splitlines()[0])["seed"] == seed


def test_tar_reader_splits_samples_at_any_piece_size() -> None:
    from synthgen.core.webdataset import tar_end, tar_sample

    sizes = [0, 1, 511, 512, 513, 3000, 17]
    blob = b"".join(tar_sample(5 + i, "png", bytes([i]) * n, {"index": 5 + i}) for i, n in enumerate(sizes)) + tar_end()
    for piece in (1, 7, 512, 513, 4096, len(blob)):
        reader = TarSampleReader(5)
        samples = [s for k in range(0, len(blob), piece) for s in reader.feed(blob[k : k + piece])]
        assert [s.index for s in samples] == list(range(5, 12)) and reader.ended
        assert b"".join(s.raw for s in samples) + tar_end() == blob
        assert samples[3].files == {"00000008.png": bytes([3]) * 512} and samples[3].meta == {"index": 8}
    with pytest.raises(SynthgenProtocolError, match="expected sample 00000004"):
        TarSampleReader(4).feed(blob)


def test_generate_errors_are_one_line(
    serve: Callable[..., LiveServer], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    live = serve()
    out = str(tmp_path / "out")
    assert main(["generate", "--server", live.url, "--count", "5", "--model", "nope", "--out", out]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert main(["generate", "--count", "5", "--shards", "2", "--out", out]) == 2
    assert "--shards needs --server" in capsys.readouterr().err
    assert main(["generate", "--server", live.url, "--count", "5", "--seed", "1", "--out", out]) == 0
    assert main(["generate", "--server", live.url, "--count", "6", "--seed", "1", "--out", out]) == 2
    assert "holds another job (it differs in count)" in capsys.readouterr().err

    # a resumed download refuses images from another model package than the ones already written
    state_path = Path(out) / STATE_FILE
    state = json.loads(state_path.read_text())
    state.update(next_index=2, manifest_bytes=len(b"".join((Path(out) / "manifest.jsonl").read_bytes().splitlines(True)[:2])))
    state_path.write_text(json.dumps({**state, "sha256": "0" * 64}))
    assert main(["generate", "--server", live.url, "--count", "5", "--seed", "1", "--out", out]) == 2
    assert "is not the package of the images already in" in capsys.readouterr().err


def test_api_keys_are_sent_as_bearer_tokens(
    serve: Callable[..., LiveServer], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    if "api_keys" not in Settings.model_fields:
        pytest.skip("this server has no API keys (no Settings.api_keys)")
    live = serve(api_keys="key-one-0001,key-two-0002")
    with SynthgenClient(live.url) as anonymous, pytest.raises(UnauthorizedError) as refused:
        anonymous.models()
    assert (refused.value.status, refused.value.code) == (401, "unauthorized")
    with SynthgenClient(live.url, api_key="key-two-0002") as client:
        assert [m.ref for m in client.models()] == ["tiny@1"]
    assert live.seen[-1].authorization == "Bearer key-two-0002"

    monkeypatch.setenv("SYNTHGEN_API_KEY", "key-one-0001")
    seen = len(live.seen)
    assert main(["generate", "--server", live.url, "--count", "3", "--out", str(tmp_path / "env")]) == 0
    assert {s.authorization for s in live.seen[seen:]} == {"Bearer key-one-0001"} and live.job_posts(seen) == 1
    wrong = ["generate", "--server", live.url, "--count", "3", "--api-key", "wrong-key-0000", "--out", str(tmp_path / "x")]
    assert main(wrong) == 2 and "401 unauthorized" in capsys.readouterr().err


def test_interpolate(serve: Callable[..., LiveServer]) -> None:
    live = serve()
    if "/v1/interpolate" not in httpx.get(f"{live.url}/openapi.json").json()["paths"]:
        pytest.skip("this server has no POST /v1/interpolate")
    from PIL import Image

    with SynthgenClient(live.url) as client:
        tar = client.interpolate(1, 2, steps=4, truncation=1.5)
        assert tar_names(tar) == sample_names(range(4))
        strip = client.interpolate(1, 2, steps=4, method="lerp", layout="strip")
        assert Image.open(io.BytesIO(strip)).size == (4 * 32, 32)
        with pytest.raises(InvalidRequestError):
            client.interpolate(1, 2, steps=1)
