"""An ASGI middleware that refuses request bodies over a size limit with a 413 and a message.

Checked twice: up front against ``Content-Length``, and while the body streams in (a chunked
upload states no length), so an oversized body is never read into memory or onto disk.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

Scope = dict[str, Any]
Message = dict[str, Any]


class _TooLargeError(Exception):
    pass


class BodyLimitMiddleware:
    """Wraps an ASGI app; ``limit_for(path)`` gives the byte limit of each request path."""

    def __init__(self, app: Any, limit_for: Callable[[str], int]) -> None:
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _refuse(send, int(declared), limit)
            return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _TooLargeError
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLargeError:
            if not started:
                await _refuse(send, received, limit)


async def _refuse(send: Callable[..., Any], size: int, limit: int) -> None:
    body = json.dumps(
        {
            "error": "PayloadTooLargeError",
            "detail": f"request body is at least {size} bytes; the limit for this endpoint is {limit} bytes",
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
