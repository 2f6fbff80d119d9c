"""``synthgen serve``: run the API, a worker, or both in one process."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Coroutine
from typing import Any, TypeVar

import uvicorn
from prometheus_client import start_http_server

from service.api.app import create_app
from service.embedded_redis import PersistentRedis
from service.engine.registry import ModelRegistry, build_registry
from service.runtime import Runtime, load_keyring
from service.settings import Settings, get_settings

log = logging.getLogger(__name__)
T = TypeVar("T")


async def run_worker(settings: Settings, registry: ModelRegistry, metrics_host: str, metrics_port: int) -> None:
    """A worker process: runs until SIGTERM or SIGINT, then finishes its work items in flight.

    It serves Prometheus metrics on metrics_host:metrics_port (0 disables them).
    """
    if metrics_port:
        start_http_server(metrics_port, addr=metrics_host)
        log.info("worker metrics on http://%s:%d/metrics", metrics_host, metrics_port)
    runtime = await Runtime.start(settings, with_worker=True, registry=registry)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, runtime.request_stop)
    try:
        await runtime.wait_worker()
    finally:
        await runtime.close()


def run_event_loop(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` on uvloop where it is installed (what uvicorn picks for the api too), else on asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def serve(role: str, host: str | None = None, port: int | None = None) -> int:
    settings = get_settings()
    if role != "all" and not settings.redis_url:
        raise ValueError(
            f"--role {role} shares work with other processes through Redis: set REDIS_URL "
            "(only --role all can run on an embedded Redis)"
        )
    host = host or settings.host
    port = settings.port if port is None else port
    # Verify every model package before anything starts: a bad one stops the process with one line.
    registry = build_registry(settings)
    load_keyring(settings)  # unreadable or missing keys stop the process here, in one line
    if role == "worker":
        run_event_loop(run_worker(settings, registry, host, port))
        return 0
    # The embedded Redis starts before the app, so a data folder held by another process stops this one
    # here, with one line, before it listens.
    embedded = PersistentRedis(settings.data_dir, settings.embedded_appendfsync) if not settings.redis_url else None
    if embedded is not None:
        embedded.start()
    try:
        app = create_app(settings, with_worker=role == "all", registry=registry, embedded=embedded)
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level=settings.log_level,
            proxy_headers=True,
            timeout_graceful_shutdown=int(settings.drain_timeout_s),
        )
        server = uvicorn.Server(config)
        server.run()
    finally:
        if embedded is not None:
            embedded.stop()  # a no-op when the app's shutdown has stopped it already
    return 0 if server.started else 3
