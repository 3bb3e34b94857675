"""The ASGI response of one stream client: its queue to the socket, until someone ends it.

Three things end a stream, whichever comes first: the client disconnects, the hub drops the
client (its queue filled: it stopped reading) or the hub closes (shutdown). The pump, the
disconnect watcher and the hub's signal run in one task group, so the first to finish cancels the
others at once, even a ``send`` blocked on a client that no longer reads; the hub forgets the
client in the same moment. Only on shutdown is the body ended properly, the others have no
reader left to tell.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Final

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

                def first_to_end(
                    work: Callable[[], Awaitable[Any]],
                ) -> Callable[[], Coroutine[Any, Any, None]]:
                    async def run() -> None:
                        await work()
                        group.cancel_scope.cancel()

                    return run

                group.start_soon(first_to_end(lambda: _pump(client, send)))
                group.start_soon(first_to_end(lambda: _until_disconnect(receive)))
                group.start_soon(first_to_end(client.gone.wait))
        finally:
            self.hub.disconnect(client)
        if client.reason == "shutdown":
            with anyio.move_on_after(_FINAL_SEND_S):
                await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _pump(client: StreamClient, send: Send) -> None:
    while True:
        data = await client.queue.get()
        await send({"type": "http.response.body", "body": data, "more_body": True})


async def _until_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
