"""Single images and interpolations decoded by the workers, over the interactive channel, with real
processes: the bytes are the in-process decode's, a worker killed holding a request costs its client a
retry (never a hang), and with no worker left the client gets a clear 503 with Retry-After."""

from __future__ import annotations

import io
import re
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest

from service.engine.registry import ModelRegistry
from synthgen.core.latents import slerp
from tests.support.live import LiveService

TIMEOUT_S = 2.0


@pytest.fixture(scope="module")
def decode(tiny_models_dir: Path) -> Callable[[int, int], np.ndarray]:
    model = ModelRegistry.from_directory(tiny_models_dir, "tiny").default

    def one(seed: int, index: int = 0) -> np.ndarray:
        return model.decode(model.latents(seed, np.array([index]), None))[0]

    return one


def _interactive_served(service: LiveService) -> float:
    total = 0.0
    for worker in service.workers:
        text = httpx.get(f"http://127.0.0.1:{service.worker_ports[worker.pid]}/metrics", timeout=5).text
        total += sum(float(v) for v in re.findall(r'^synthgen_interactive_requests_total\{outcome="done"\} (\S+)$', text, re.M))
    return total


def _npy(response: httpx.Response) -> np.ndarray:
    assert response.status_code == 200, response.text
    return np.load(io.BytesIO(response.content))


@pytest.mark.parametrize("cluster", [False, True], ids=["redis", "redis-cluster"])
def test_single_images_and_interpolations_are_decoded_by_the_workers(
    cluster: bool, live_service: Callable[..., LiveService], decode: Callable[[int, int], np.ndarray], tiny_models_dir: Path
) -> None:
    service = live_service(workers=1, cluster=cluster)
    service.wait_workers()
    with httpx.Client(base_url=service.base_url, timeout=30) as http:
        assert np.array_equal(_npy(http.get("/v1/images/7.npy", params={"index": 3})), decode(7, 3))
        body = {"from_seed": 1, "to_seed": 2, "steps": 5, "format": "npy"}
        strip = _npy(http.post("/v1/interpolate", params={"layout": "strip"}, json=body))
        model = ModelRegistry.from_directory(tiny_models_dir, "tiny").default
        a, b = (model.latents(s, np.array([0]), None)[0] for s in (1, 2))
        assert np.array_equal(strip, model.decode(slerp(a, b, np.linspace(0.0, 1.0, 5))))
        # while a bulk job keeps the worker busy, single images still come back, with the same bytes
        job = http.post("/v1/jobs", json={"count": 2000, "seed": 5, "format": "npy"}).json()
        for seed in range(5):
            assert np.array_equal(_npy(http.get(f"/v1/images/{seed}.npy")), decode(seed, 0))
        assert http.get(f"/v1/jobs/{job['id']}").json()["status"] in ("queued", "running", "succeeded")
    assert _interactive_served(service) >= 7  # the workers decoded them, not the api


def test_a_worker_killed_holding_a_request_costs_a_retry_and_no_worker_gives_503(
    live_service: Callable[..., LiveService], decode: Callable[[int, int], np.ndarray]
) -> None:
    """Worker A is stopped (SIGSTOP) while it waits on the request list, so Redis hands it requests it will
    never answer; then it is SIGKILLed. Every client still gets its image, from worker B, after one retry.
    With B gone too, a request gets 503 unavailable with Retry-After within two timeouts."""
    service = live_service(workers=2, SYNTHGEN_INTERACTIVE_TIMEOUT_S=str(TIMEOUT_S))
    service.wait_workers()
    victim, survivor = service.workers
    with httpx.Client(base_url=service.base_url, timeout=30) as http:
        assert _npy(http.get("/v1/images/1.npy")).shape == decode(1, 0).shape  # both workers are up and listening
        time.sleep(0.5)
        victim.send_signal(signal.SIGSTOP)
        results: dict[int, tuple[np.ndarray | None, float]] = {}

        def fetch(seed: int) -> None:
            started = time.monotonic()
            response = httpx.get(f"{service.base_url}/v1/images/{seed}.npy", timeout=30)
            results[seed] = (_npy(response) if response.status_code == 200 else None, time.monotonic() - started)

        threads = [threading.Thread(target=fetch, args=(seed,)) for seed in range(100, 108)]
        for thread in threads:
            thread.start()
            time.sleep(0.05)  # one by one: Redis hands each to the worker that has waited longest
        time.sleep(0.3)
        service.kill_worker(victim)  # SIGKILL: whatever it had taken is gone with it
        for thread in threads:
            thread.join(30)
        for seed in range(100, 108):
            image, seconds = results[seed]
            assert image is not None and np.array_equal(image, decode(seed, 0)), seed
            assert seconds < 3 * TIMEOUT_S + 5, (seed, seconds)
        retried = [s for s, (_, seconds) in results.items() if seconds >= TIMEOUT_S]
        assert retried, "no request was held by the stopped worker: the retry path was not exercised"
        assert "no worker answered an interactive request" in service.logs("api")

        service.kill_worker(survivor)
        started = time.monotonic()
        refused = http.get("/v1/images/9.npy")
        assert time.monotonic() - started < 2 * TIMEOUT_S + 3
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "unavailable"
        assert int(refused.headers["Retry-After"]) >= 1


def test_single_images_that_reach_the_api_together_travel_as_one_request_and_each_gets_its_own_rows(redis_url: str) -> None:
    """The api's side of the channel against a real Redis, with this test as the worker: eight requests made in one
    turn of the event loop become one request of eight rows; its reply is split back, each caller its own image.
    A ninth request past ``max_rows`` goes in a request of its own."""
    import asyncio

    from service.queue import keys as K
    from service.queue.connection import connect
    from service.queue.interactive import InteractiveClient, InteractiveRequest, encode_reply

    async def scenario() -> None:
        client = connect(redis_url)
        api = InteractiveClient(client, timeout_s=5.0, max_rows=8)
        rows = [np.full((1, 4), i, dtype=np.float32) for i in range(9)]
        callers = [asyncio.ensure_future(api.decode("tiny@1", "abc", z)) for z in rows]
        await asyncio.sleep(0.2)
        messages = await client.lrange(K.INTERACTIVE_REQUESTS_KEY, 0, -1)
        # the two requests leave on tasks of their own, so they may reach the list in either order
        requests = sorted((InteractiveRequest.decode(bytes(m)) for m in messages), key=lambda r: float(r.z[0, 0]))
        assert [len(r.z) for r in requests] == [8, 1]
        assert np.array_equal(np.concatenate([r.z for r in requests])[:, 0], np.arange(9))
        for request in requests:  # the worker's reply: each row's value as an image
            images = np.repeat(request.z[:, :1, None, None], 3, axis=2).astype(np.uint8).reshape(len(request.z), 1, 1, 3)
            await client.rpush(K.interactive_reply_key(request.id), encode_reply(images))
        got = await asyncio.wait_for(asyncio.gather(*callers), 5)
        assert [int(image[0, 0, 0, 0]) for image in got] == list(range(9))
        assert all(image.shape == (1, 1, 1, 3) for image in got)
        await client.aclose()

    asyncio.run(scenario())
