"""The ASGI response of one stream client: its queue to the socket, until someone ends it.

Three things end a stream, whichever comes first: the client disconnects, the hub drops the
client (its queue filled: it stopped reading) or the hub closes (shutdown). The pump runs as a
task of its own while the response's task watches for the disconnect, in one task group; each of
the three cancels the group at once, even a ``send`` blocked on a client that no longer reads,
and the hub forgets the client in the same moment. Only on shutdown is the body ended properly, the others have no
reader left to tell.
"""

from __future__ import annotations

from typing import Final

import anyio
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from m1lib.api.stream.hub import StreamClient, StreamHub

__all__ = ["EventStreamResponse"]

MEDIA_TYPE: Final = "text/event-stream"
_FINAL_SEND_S: Final = 1.0  # on shutdown, how long the last empty chunk may take to leave


class EventStreamResponse(Response):
    """``text/event-stream`` fed by a :class:`StreamClient` of ``hub``."""

    media_type = MEDIA_TYPE

    def __init__(self, hub: StreamHub, client: StreamClient) -> None:
        # Not Response.__init__: it would declare an empty body (Content-Length: 0).
        self.status_code = 200
        self.background = None
        self.init_headers({"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self.hub = hub
        self.client = client

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = self.client
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            async with anyio.create_task_group() as group:
                # The hub closing the client (dropped, shutdown) cancels all of it at once, even
                # a send blocked on a client that no longer reads; so does the pump ending.
                client.on_close = group.cancel_scope.cancel
                if client.gone:
                    group.cancel_scope.cancel()
                group.start_soon(_pump, client, send, group.cancel_scope)
                await _until_disconnect(receive)  # this task watches: one task per client less
                group.cancel_scope.cancel()
        finally:
            client.on_close = None
            self.hub.disconnect(client)
        if client.reason == "shutdown":
            with anyio.move_on_after(_FINAL_SEND_S):
                await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _pump(client: StreamClient, send: Send, scope: anyio.CancelScope) -> None:
    while (data := await client.take()) is not None:
        await send({"type": "http.response.body", "body": data, "more_body": True})
    scope.cancel()


async def _until_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
