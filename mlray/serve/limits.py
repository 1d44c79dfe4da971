"""A pure ASGI middleware that refuses a body above a size with 413 before the application reads it."""

from __future__ import annotations

import json
from typing import Callable

DRAIN_FACTOR = 16


class BodyLimit:
    """413 for a Content-Length above `limit` (bytes, or a function giving them), or once a chunked body grows past it."""

    def __init__(self, app, limit: int | Callable[[], int]):
        self.app, self._limit = app, limit

    @property
    def limit(self) -> int:
        return self._limit() if callable(self._limit) else self._limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            await self._refuse(send)
            return await self._drain(receive, int(length))
        seen, started = 0, False

        async def counted_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge()
            return message

        async def tracked_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except _TooLarge:
            if not started:
                await self._refuse(send)

    async def _drain(self, receive, length: int) -> None:
        """Read and drop a refused body of up to DRAIN_FACTOR times the limit: a client that sends the whole body
        before it reads the answer (urllib, requests) then gets the 413 instead of a reset connection."""
        if length > DRAIN_FACTOR * self.limit:
            return
        while (message := await receive())["type"] == "http.request" and message.get("more_body", False):
            pass

    async def _refuse(self, send) -> None:
        body = json.dumps({"detail": f"request body is larger than {self.limit} bytes"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass
