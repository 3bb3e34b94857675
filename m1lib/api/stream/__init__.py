"""The live dashboard stream (``GET /api/m1/dashboard/stream``): one hub per replica.

``figures`` reads the event store, ``encode`` writes the wire format, ``hub`` runs the tick loop
and the clients' queues, ``response`` pumps one client's queue to its socket.
"""

from __future__ import annotations

from m1lib.api.stream.hub import EVENT_TYPES, StreamClient, StreamHub, parse_types
from m1lib.api.stream.response import EventStreamResponse

__all__ = ["EVENT_TYPES", "EventStreamResponse", "StreamClient", "StreamHub", "parse_types"]
