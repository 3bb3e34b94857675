"""uvicorn that ends the live streams as soon as it is told to stop.

uvicorn waits for open responses before it runs the app's lifespan shutdown, and a stream never
finishes by itself: without this, every stream would hold shutdown until
``timeout_graceful_shutdown`` and then be cut mid-body. This server closes the app's stream hub
the moment the exit signal arrives, so each stream ends with a proper last chunk and shutdown
goes on at once.

It also sets the garbage collector up for many long-lived connections: the objects of the
started app are frozen out of every collection, and young collections come every
``M1_API_GC_YOUNG_THRESHOLD`` allocations. Full collections walk every tracked object (hundreds per
stream client) with the GIL held, pausing every stream at once; they are what decides the
stream's p99 (bench/stream.py).
"""

from __future__ import annotations

import gc
import socket
from types import FrameType

import uvicorn

from m1lib.api.stream.hub import StreamHub

__all__ = ["StreamAwareServer"]


class StreamAwareServer(uvicorn.Server):
    """``uvicorn.Server`` whose exit signal also closes ``app.state.stream_hub``."""

    def __init__(self, config: uvicorn.Config, *, gc_young_threshold: int = 0) -> None:
        super().__init__(config)
        self.gc_young_threshold = gc_young_threshold

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.gc_young_threshold:
            _, middle, old = gc.get_threshold()
            gc.set_threshold(self.gc_young_threshold, middle, old)
        gc.collect()
        gc.freeze()  # what the started app holds lives as long as the process: never walk it

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        state = getattr(self.config.app, "state", None)
        hub: StreamHub | None = getattr(state, "stream_hub", None)
        if hub is not None:
            hub.close_soon()
