"""A light closed-loop HTTP/1.1 load generator: ``clients`` keep-alive connections, each sending GETs back to back.

A load generator on the same cores as the server takes CPU from it; a Python HTTP client (httpx, in threads)
costs more CPU per request than the service does (bench/results/serving.txt), so it measures itself more
than the server. This one is a plain asyncio protocol loop (on uvloop where installed): it writes each
request as one prepared line, reads the status line, headers and a Content-Length body, checks the status,
and records the latency. It speaks only what the benchmark needs (GET, Content-Length bodies, keep-alive).

    from bench.http_load import closed_loop
    rate, latencies = closed_loop("127.0.0.1", 8000, lambda c, i: f"/v1/images/{c}.npy?index={i}", clients=32, per_client=16)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from service.serve import run_event_loop

PathFor = Callable[[int, int], str]  # (client, request number) -> path and query


class LoadError(RuntimeError):
    """A response that was not 200, or a connection that broke."""


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    body = await reader.readexactly(length) if length else b""
    return status, body


async def _client(host: str, port: int, client: int, per_client: int, path_for: PathFor, latencies: list[float]) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        for i in range(per_client):
            request = f"GET {path_for(client, i)} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
            started = time.perf_counter()
            writer.write(request)
            status, body = await _read_response(reader)
            if status != 200:
                raise LoadError(f"GET {path_for(client, i)} answered {status}: {body[:200]!r}")
            latencies.append(time.perf_counter() - started)
    finally:
        writer.close()


async def _run(host: str, port: int, path_for: PathFor, clients: int, per_client: int) -> tuple[float, list[float]]:
    latencies: list[float] = []
    started = time.perf_counter()
    await asyncio.gather(*(_client(host, port, c, per_client, path_for, latencies) for c in range(clients)))
    return len(latencies) / (time.perf_counter() - started), latencies


def closed_loop(host: str, port: int, path_for: PathFor, clients: int, per_client: int) -> tuple[float, list[float]]:
    """(requests/s, latencies in seconds) of ``clients`` connections each sending ``per_client`` GETs back to back."""
    return run_event_loop(_run(host, port, path_for, clients, per_client))
