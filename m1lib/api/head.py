"""HEAD wherever GET: the GET's status and headers, without its body (RFC 9110 section 9.3.2).

FastAPI routes answer only the methods they declare, so ``HEAD /health/live`` was a 405. This
middleware runs a HEAD request as the GET it mirrors and sends on only the response's start and
an empty body. A streaming GET (Server-Sent Events) would never end, so once its headers are sent
the GET is cancelled.
"""

from __future__ import annotations

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["HeadAsGet"]


class HeadAsGet:
    """ASGI middleware: answer ``HEAD`` by running ``GET`` and dropping the body."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return
        async with anyio.create_task_group() as group:
            ended = False

            async def headers_only(message: Message) -> None:
                nonlocal ended
                if message["type"] == "http.response.start":
                    await send(message)
                elif message["type"] == "http.response.body" and not ended:
                    ended = True
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
                    if message.get("more_body", False):
                        group.cancel_scope.cancel()  # a stream: its headers are all HEAD wants

            await self.app({**scope, "method": "GET"}, receive, headers_only)
