"""uvicorn that ends the live streams as soon as it is told to stop.

uvicorn waits for open responses before it runs the app's lifespan shutdown, and a stream never
finishes by itself: without this, every stream would hold shutdown until
``timeout_graceful_shutdown`` and then be cut mid-body. This server closes the app's stream hub
the moment the exit signal arrives, so each stream ends with a proper last chunk and shutdown
goes on at once.
"""

from __future__ import annotations

from types import FrameType

import uvicorn

from m1lib.api.stream.hub import StreamHub

__all__ = ["StreamAwareServer"]


class StreamAwareServer(uvicorn.Server):
    """``uvicorn.Server`` whose exit signal also closes ``app.state.stream_hub``."""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        state = getattr(self.config.app, "state", None)
        hub: StreamHub | None = getattr(state, "stream_hub", None)
        if hub is not None:
            hub.close_soon()
