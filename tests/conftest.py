"""Shared fixtures: a real redis-server per test, and a tiny trained and exported model package."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi.testclient import TestClient
from starlette.types import ASGIApp

from service.api.app import create_app
from service.embedded_redis import EmbeddedRedis
from service.settings import Settings
from tests.support.conditional_model import ConditionalModel, build_conditional_package
from tests.support.live import LiveService, in_api_decode_without_worker

REPO = Path(__file__).resolve().parent.parent

SHIPPED_MODELS = REPO / "models"
# `synthgen serve` with no REDIS_URL keeps its data in SYNTHGEN_DATA_DIR: never the user's own folder in tests
os.environ.setdefault("SYNTHGEN_DATA_DIR", tempfile.mkdtemp(prefix="sg-data-"))


@pytest.fixture
def redis_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., EmbeddedRedis]]:
    """Start real redis-servers on unix sockets; every one is stopped after the test."""
    started: list[EmbeddedRedis] = []

    def start(appendonly: bool = False) -> EmbeddedRedis:
        # unix socket paths are limited to ~100 bytes, so keep the directory short
        server = EmbeddedRedis(tmp_path_factory.mktemp("redis"), appendonly=appendonly)
        server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def redis_url(redis_factory: Callable[..., EmbeddedRedis]) -> str:
    return redis_factory().url


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A few training steps of a tiny 32px AAE on avatar faces."""
    pytest.importorskip("torch")
    from aae.model import AAEConfig
    from aae.train import TrainOptions, train

    out = tmp_path_factory.mktemp("tiny-run")
    options = TrainOptions(
        data="avatars",
        count=64,
        epochs=1,
        batch_size=16,
        max_steps=4,
        out_dir=str(out),
        cache_dir=str(out / "cache"),
        config=AAEConfig(image_size=32, latent_dim=8, base_width=8, disc_hidden=32),
    )
    return train(options)


@pytest.fixture(scope="session")
def tiny_models_dir(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models directory holding the tiny model exported as package 'tiny', version 1."""
    from export.package import export_package

    models = tmp_path_factory.mktemp("models")
    export_package(tiny_checkpoint, models / "tiny", name="tiny", version="1")
    return models


@pytest.fixture(scope="session")
def tiny_conditional(tmp_path_factory: pytest.TempPathFactory) -> ConditionalModel:
    """A tiny conditional model (z and the avatars' one-hot labels), trained for a few steps and exported as
    package 'tiny-cond' version 1 without an encoder: ``.package``, ``.models_dir`` (holding it alone),
    ``.checkpoint``."""
    pytest.importorskip("torch")
    root = tmp_path_factory.mktemp("tiny-cond")
    return build_conditional_package(root / "models", root / "training")


@pytest.fixture
def app_factory(redis_url: str, tiny_models_dir: Path) -> Iterator[Callable[..., TestClient]]:
    """Start real apps (with an in-process worker unless told otherwise) on the test's redis-server and
    the tiny model; every one is shut down afterwards."""
    opened: list[TestClient] = []

    def make(with_worker: bool = True, **overrides: Any) -> TestClient:
        values: dict[str, Any] = {
            "redis_url": redis_url, "models_dir": tiny_models_dir, "default_model": "tiny",
            **in_api_decode_without_worker(with_worker), **overrides,
        }  # fmt: skip
        client = TestClient(create_app(Settings(**values), with_worker=with_worker))
        client.__enter__()
        opened.append(client)
        return client

    yield make
    for client in opened:
        client.__exit__(None, None, None)


@pytest.fixture
def worker_processes(redis_url: str, tiny_models_dir: Path) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start `synthgen serve --role worker` processes; all are killed afterwards."""
    started: list[subprocess.Popen[bytes]] = []

    def start(**env_overrides: str) -> subprocess.Popen[bytes]:
        env = {
            **os.environ,
            "REDIS_URL": redis_url,
            "SYNTHGEN_MODELS_DIR": str(tiny_models_dir),
            "SYNTHGEN_DEFAULT_MODEL": "tiny",
            "SYNTHGEN_VISIBILITY_TIMEOUT_S": "1",
            "SYNTHGEN_BATCH_SIZE": "32",
            **env_overrides,
        }
        cmd = [sys.executable, "-m", "synthgen.cli", "--log-level", "WARNING", "serve", "--role", "worker", "--port", "0"]
        process = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait(10)


@pytest.fixture
def live_service(tiny_models_dir: Path, tmp_path: Path) -> Iterator[Callable[..., LiveService]]:
    """Start real deployments: a redis-server, a `synthgen serve --role api` process and worker processes,
    on the tiny model, with small chunks; each process logs to a file under the test's tmp_path."""
    started: list[LiveService] = []

    def start(
        workers: int = 1, appendonly: bool = False, log_level: str = "WARNING", cluster: bool = False, **env: str
    ) -> LiveService:
        values = {
            "SYNTHGEN_MODELS_DIR": str(tiny_models_dir),
            "SYNTHGEN_DEFAULT_MODEL": "tiny",
            "SYNTHGEN_VISIBILITY_TIMEOUT_S": "1",
            "SYNTHGEN_BATCH_SIZE": "32",
            "SYNTHGEN_CHUNK_SIZE": "50",
            **env,
        }
        log_dir = tmp_path / f"live-{len(started)}"
        service = LiveService(
            values, workers=workers, appendonly=appendonly, log_dir=log_dir, log_level=log_level, cluster=cluster
        )
        started.append(service)
        return service

    yield start
    for service in started:
        service.close()


@pytest.fixture
def uvicorn_thread() -> Iterator[Callable[[ASGIApp], str]]:
    """Serve ASGI apps with uvicorn on a free port of 127.0.0.1, each in a thread; returns the base URL.
    Every server is stopped afterwards."""
    running: list[tuple[uvicorn.Server, threading.Thread, socket.socket]] = []

    def start(app: ASGIApp) -> str:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        config = uvicorn.Config(app, log_level="warning", log_config=None, ws="none", lifespan="on")
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        running.append((server, thread, sock))
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.01)
        return f"http://127.0.0.1:{sock.getsockname()[1]}"

    yield start
    for server, thread, sock in running:
        server.should_exit = True
        thread.join(30)
        sock.close()


@pytest.fixture
def live_app(redis_url: str, tiny_models_dir: Path, uvicorn_thread: Callable[[ASGIApp], str]) -> Callable[..., str]:
    """Real apps served by uvicorn on 127.0.0.1, in a thread; returns the base URL."""

    def start(with_worker: bool = True, **overrides: Any) -> str:
        values: dict[str, Any] = {
            "redis_url": redis_url, "models_dir": tiny_models_dir, "default_model": "tiny",
            **in_api_decode_without_worker(with_worker), **overrides,
        }  # fmt: skip
        return uvicorn_thread(create_app(Settings(**values), with_worker=with_worker))

    return start
