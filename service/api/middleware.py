"""The app's middleware: request body limits (413, 408) and the per-route request metrics."""

from __future__ import annotations

import asyncio
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.errors import error_response
from service.telemetry import instruments as M


class BodySizeLimit:
    """Read the whole request body before the app sees it, and answer 413 when it is over ``max_bytes``
    (declared in Content-Length or not) and 408 when it takes longer than ``timeout_s`` to arrive, so a
    slow client cannot hold a request open. Bodies are small (64 KiB by default), so holding one costs little."""

    def __init__(self, app: ASGIApp, max_bytes: int, timeout_s: float = 30.0) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers", []))
        declared = headers.get(b"content-length")
        if (declared is None or declared == b"0") and b"transfer-encoding" not in headers:
            await self.app(scope, receive, send)  # no body (RFC 9112, 6.3): nothing to limit or wait for
            return
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._too_large(scope, receive, send)
            return
        reading = _BodyReader(self.max_bytes)
        try:
            body = await asyncio.wait_for(reading.read(receive), self.timeout_s)
        except TimeoutError:
            if not reading.too_large:
                response = error_response(
                    408, "request_timeout", f"the request body did not arrive within {self.timeout_s:g} s",
                    {"timeout_s": self.timeout_s}, headers={"Connection": "close"},
                )  # fmt: skip
                await response(scope, receive, send)
                return
            body = None
        if reading.too_large:
            await self._too_large(scope, receive, send)
            return
        if body is None:
            return  # the client went away before its body was complete: there is no one to answer
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()  # after the body: waits for a disconnect, with no deadline
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(
            413, "too_large", f"request bodies are limited to {self.max_bytes} bytes", {"max_bytes": self.max_bytes},
            headers={"Connection": "close"},
        )  # fmt: skip
        await response(scope, receive, send)


class _BodyReader:
    """Reads a request body whole. Past ``max_bytes`` it keeps reading, and dropping, up to DRAIN_BYTES
    more, so that the client, still sending, can read the 413 rather than a connection reset."""

    DRAIN_BYTES = 1 << 20

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.too_large = False

    async def read(self, receive: Receive) -> bytes | None:
        """The body, or None when the client disconnected first or the body is too large."""
        parts: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return None
            part = message.get("body", b"")
            seen += len(part)
            if seen > self.max_bytes:
                self.too_large = True
                parts.clear()
            else:
                parts.append(part)
            if not message.get("more_body", False) or seen > self.max_bytes + self.DRAIN_BYTES:
                return None if self.too_large else b"".join(parts)


class RequestMetrics:
    """Count every request and time it, by method, route template and status (``synthgen_requests_total``,
    ``synthgen_request_seconds``). Plain ASGI: it only watches the response start go by, so it adds no task,
    stream or copy to a request (Starlette's ``BaseHTTPMiddleware`` costs a task group and a memory stream each)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets when the app raises before it answers

        async def watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            path = getattr(scope.get("route"), "path", "unmatched")  # the router leaves the matched route here
            M.REQUESTS.labels(scope["method"], path, str(status)).inc()
            M.REQUEST_SECONDS.labels(scope["method"], path).observe(time.perf_counter() - started)
