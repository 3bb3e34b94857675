"""The Server-Sent Events wire format, written once per event and shared by every client.

An event is ``event:``, ``id:`` (snapshots and alerts only), ``data:`` lines and a blank line;
``data`` is the JSON envelope ``{"type", "timestamp", "data"}`` on one line (compact JSON has no
line break, so one ``data:`` line always suffices). A heartbeat is a comment line, which browsers
ignore and proxies see as traffic.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

__all__ = ["comment", "encode_event", "iso_time", "retry"]


def iso_time(ts_us: int) -> str:
    """ISO-8601 UTC time with milliseconds: ``2026-12-03T08:50:00.500Z``."""
    moment = datetime.fromtimestamp(ts_us / 1_000_000, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def encode_event(kind: str, data: Any, *, ts_us: int, event_id: str | None = None) -> bytes:
    """One event, ready for the socket."""
    envelope = {"type": kind, "timestamp": iso_time(ts_us), "data": data}
    text = json.dumps(envelope, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    head = f"event: {kind}\n" + (f"id: {event_id}\n" if event_id is not None else "")
    return (head + f"data: {text}\n\n").encode()


def comment(text: str) -> bytes:
    return f": {text}\n\n".encode()


def retry(ms: int) -> bytes:
    """The reconnection delay a browser should use, sent once when a stream opens."""
    return f"retry: {ms}\n\n".encode()
