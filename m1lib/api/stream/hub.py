"""One hub per replica: computes each snapshot once per tick, encodes it once, fans the bytes out.

A single task on the event loop wakes at each tick boundary (``floor(now / tick) * tick``, the
snapshot's id, so every replica names a tick alike), computes the figures on a worker thread and
puts the same ``bytes`` object into each client's bounded queue. Nothing the hub does waits for a
client: a client whose queue is full has stopped reading and is dropped on the spot, its stream
cancelled, so a stalled browser tab costs nobody else a thing. Between ticks the store tells the
hub when ``error_alerts`` events arrive (recorded here, or from another replica over the shared
stream) and the hub pushes them at once; it also looks every :data:`ALERT_POLL_S`, in case.

Alerts are kept, sorted by id, in a bounded replay buffer. A client that comes back with
``Last-Event-ID`` gets the buffered alerts after that id; an id older than what the buffer still
covers (its *floor*: the newest alert evicted, or the hub's start minus the window) gets a
``reset`` event instead, since alerts it missed may be gone.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

import anyio.to_thread

from m1lib.api.stream.encode import comment, encode_event, retry
from m1lib.api.stream.figures import (
    SNAPSHOT_TYPES,
    Alert,
    alerts_between,
    health_from_store,
    snapshot_figures,
)
from m1lib.errors import InputError, UnavailableError
from m1lib.metrics.store import EventStore
from m1lib.settings import StreamSettings

__all__ = ["ALERT_POLL_S", "EVENT_TYPES", "StreamClient", "StreamHub", "parse_types"]

logger = logging.getLogger("m1.api.stream")

EVENT_TYPES: Final = (*SNAPSHOT_TYPES, "error_alert", "health_status", "reset")
ALERT_POLL_S: Final = 1.0
"""How often the hub looks for new alerts without being told (the store's notice is the fast path)."""
_ALERTS: Final = "error_alerts"
READINESS_EVERY_S: Final = 5.0
"""How often readiness (a database round trip) is asked while no health check event exists."""
_FAR_FUTURE_US: Final = 1 << 62
_HEARTBEAT: Final = comment("heartbeat")

Readiness = Callable[[], Mapping[str, Mapping[str, Any]]]


def parse_types(text: str | None) -> frozenset[str]:
    """``?types=a,b``: the selected event types (all when absent); an unknown name is a 400."""
    if text is None or not text.strip():
        return frozenset(EVENT_TYPES)
    chosen = {part.strip() for part in text.split(",") if part.strip()}
    for name in sorted(chosen):
        if name not in EVENT_TYPES:
            raise InputError("types", f"{name[:64]!r} is not a stream event type", EVENT_TYPES)
    return frozenset(chosen | {"reset"})  # a client always hears that it must start over


class StreamClient:
    """One connected stream: its selection and a bounded mailbox of encoded messages.

    Lean on purpose (slots, a deque and at most one waiting future, not an ``asyncio.Queue``
    and an ``Event``): a replica holds thousands, and each object of each one is walked by every
    full garbage collection. Only the event loop's thread touches it.
    """

    __slots__ = ("_items", "_waiter", "gone", "limit", "on_close", "reason", "types")

    def __init__(self, types: frozenset[str], limit: int) -> None:
        self.types = types
        self.limit = limit
        self.gone = False
        self.reason = ""
        self.on_close: Callable[[], object] | None = None  # the response's "stop everything"
        self._items: deque[bytes] = deque()
        self._waiter: asyncio.Future[None] | None = None

    def offer(self, data: bytes) -> bool:
        """Queue ``data``; False (and the client closed as slow) when its mailbox is full."""
        if self.gone:
            return False
        if len(self._items) >= self.limit:
            self.close("slow")
            return False
        self._items.append(data)
        self._wake()
        return True

    async def take(self) -> bytes | None:
        """Everything queued, as one message (fewer sends); None once the client is closed."""
        while not self._items:
            if self.gone:
                return None
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        if self.gone:
            return None
        data = b"".join(self._items) if len(self._items) > 1 else self._items[0]
        self._items.clear()
        return data

    def close(self, reason: str) -> None:
        if self.gone:
            return
        self.gone = True
        self.reason = reason
        self._items.clear()
        self._wake()
        if self.on_close is not None:
            self.on_close()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


def _alert_key(event_id: str) -> tuple[int, str] | None:
    """An id as an alert key: ``<µs>-<digest>`` (alert) or ``<ms>`` (snapshot tick), else None."""
    stamp, dash, digest = event_id.strip().partition("-")
    if not stamp.isdigit() or len(stamp) > 18:
        return None
    if dash:
        return (int(stamp), digest) if digest.isalnum() and len(digest) <= 32 else None
    return (int(stamp) * 1000, "~")  # after every alert of that microsecond


class StreamHub:
    """The live stream of one replica (see the module docstring).

    >>> hub = StreamHub(settings.stream, store=runtime.metrics.store)
    >>> await hub.start()        # on the event loop, in the app's lifespan
    >>> client = hub.connect(types, last_event_id)
    >>> await hub.close()        # ends every stream cleanly
    """

    def __init__(
        self,
        settings: StreamSettings,
        *,
        store: EventStore,
        readiness: Readiness | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.store = store
        self.readiness = readiness
        self.clock = clock
        self.clients: set[StreamClient] = set()
        self.dropped_clients = 0  # dropped because their queue filled
        self.ticks = 0
        self.last_tick_ms: int | None = None
        self._window_us = round(settings.window_s * 1_000_000)
        self._buffer: list[Alert] = []
        self._seen: dict[str, int] = {}  # alert id -> ts, for the alerts inside the window
        self._floor: tuple[int, str] = (0, "")
        self._health: bytes | None = None
        self._health_signature: object = None
        self._readiness_at = -float("inf")
        self._readiness: dict[str, Any] | None = None
        self._task: asyncio.Task[None] | None = None
        self._arrived = asyncio.Event()  # set from the store's adding thread: new alerts
        self._alerts_version = -1  # the store's error_alerts version at the last scan
        self._unwatch: Callable[[], None] | None = None
        self._closer: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def client_count(self) -> int:
        return len(self.clients)

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the window's alerts, then run the loop as a task of the running event loop."""
        now_us = round(self.clock() * 1_000_000)
        self._floor = (now_us - self._window_us, "")
        loop, arrived = asyncio.get_running_loop(), self._arrived

        def notify() -> None:  # the store's adding thread: hand the notice to the loop
            with contextlib.suppress(RuntimeError):  # the loop closed first: nobody to tell
                loop.call_soon_threadsafe(arrived.set)

        self._unwatch = self.store.watch(_ALERTS, notify)
        self._remember(await anyio.to_thread.run_sync(self._scan_alerts, now_us))
        self._task = asyncio.create_task(self._run(), name="m1-stream-hub")

    async def close(self) -> None:
        """End every stream cleanly and stop the loop; idempotent."""
        self._closing = True
        unwatch, self._unwatch = self._unwatch, None
        if unwatch is not None:
            unwatch()
        for client in list(self.clients):
            client.close("shutdown")
        self.clients.clear()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def close_soon(self) -> None:
        """:meth:`close` scheduled on the hub's loop; callable from any thread or signal handler."""
        task = self._task
        if task is None or task.done():
            return
        loop = task.get_loop()

        def schedule() -> None:
            self._closer = loop.create_task(self.close())

        loop.call_soon_threadsafe(schedule)

    # -- clients -----------------------------------------------------------------------------

    def connect(self, types: frozenset[str], last_event_id: str | None) -> StreamClient:
        """A new client, its queue primed with retry, health, and replayed alerts or a reset."""
        if self._closing:
            raise UnavailableError("the stream is shutting down on this replica", retry_after_s=1)
        if len(self.clients) >= self.settings.max_clients:
            raise UnavailableError(
                f"this replica serves its maximum of {self.settings.max_clients} stream clients "
                "(M1_STREAM_MAX_CLIENTS)",
                retry_after_s=5,
            )
        first = [retry(self.settings.retry_ms)]
        if self._health is not None and "health_status" in types:
            first.append(self._health)
        if last_event_id is not None:
            first.extend(self._resume(types, last_event_id))
        client = StreamClient(types, self.settings.client_queue)
        client.offer(b"".join(first))  # one message: a long replay never fills the queue
        self.clients.add(client)
        return client

    def disconnect(self, client: StreamClient) -> None:
        client.close(client.reason or "disconnected")
        self.clients.discard(client)

    def _resume(self, types: frozenset[str], last_event_id: str) -> list[bytes]:
        key = _alert_key(last_event_id)
        now_us = round(self.clock() * 1_000_000)
        if key is None or key < self._floor:
            reason = (
                "Last-Event-ID is not an id of this stream"
                if key is None
                else "Last-Event-ID is older than the alerts this replica keeps"
            )
            return [encode_event("reset", {"reason": reason}, ts_us=now_us)]
        if "error_alert" not in types:
            return []
        start = bisect.bisect_right(self._buffer, key, key=lambda alert: alert.key)
        return [self._encode_alert(alert) for alert in self._buffer[start:]]

    def _broadcast(self, kind: str, data: bytes) -> None:
        for client in list(self.clients):
            if kind in client.types and not client.offer(data):
                self._drop(client)

    def _fan_out(self, parts: Mapping[str, bytes]) -> None:
        """Each client gets the parts it selected, joined once per distinct selection."""
        joined: dict[frozenset[str], bytes] = {}
        for client in list(self.clients):
            message = joined.get(client.types)
            if message is None:
                message = joined[client.types] = b"".join(
                    data for kind, data in parts.items() if kind in client.types
                )
            if message and not client.offer(message):
                self._drop(client)

    def _drop(self, client: StreamClient) -> None:
        self.clients.discard(client)
        self.dropped_clients += 1
        logger.warning("a stream client stopped reading (its queue filled); dropped")

    # -- the loop ----------------------------------------------------------------------------

    async def _run(self) -> None:
        tick_ms = self.settings.tick_ms
        next_heartbeat = time.monotonic() + self.settings.heartbeat_s
        next_tick_ms = (int(self.clock() * 1000) // tick_ms + 1) * tick_ms
        while True:
            now = self.clock()
            # the heartbeat is due on time even when ticks and polls are further apart than it
            heartbeat_in = next_heartbeat - time.monotonic()
            wait = min(next_tick_ms / 1000 - now, ALERT_POLL_S, heartbeat_in)
            if wait > 0 and not self._arrived.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._arrived.wait(), wait)
            try:
                now_ms = int(self.clock() * 1000)
                self._arrived.clear()  # before scanning: an alert added meanwhile wakes us again
                if now_ms >= next_tick_ms:
                    tick = now_ms // tick_ms * tick_ms  # a late wake-up still names its own tick
                    next_tick_ms = tick + tick_ms
                    await self._tick(tick)
                else:
                    await self._poll_alerts()
                if time.monotonic() >= next_heartbeat:
                    next_heartbeat = time.monotonic() + self.settings.heartbeat_s
                    self._broadcast_all(_HEARTBEAT)
            except asyncio.CancelledError:
                raise
            except Exception:  # a failing tick must not end the stream for everyone
                logger.exception("the stream hub's tick failed; it goes on at the next one")

    def _broadcast_all(self, data: bytes) -> None:
        for client in list(self.clients):
            if not client.offer(data):
                self._drop(client)

    async def _poll_alerts(self) -> None:
        now_us = round(self.clock() * 1_000_000)
        fresh = await anyio.to_thread.run_sync(self._scan_alerts, now_us)
        self._remember(fresh)
        self._push_alerts(fresh)

    async def _tick(self, tick_ms: int) -> None:
        end_us = tick_ms * 1000
        figures, health, fresh = await anyio.to_thread.run_sync(self._compute, end_us)
        self._remember(fresh)
        self._push_alerts(fresh)
        tick_id = str(tick_ms)
        parts = {
            kind: encode_event(kind, figures[kind], ts_us=end_us, event_id=tick_id)
            for kind in SNAPSHOT_TYPES
        }
        self._update_health(health, end_us)
        self._fan_out(parts)
        self.ticks += 1
        self.last_tick_ms = tick_ms

    def _compute(
        self, end_us: int
    ) -> tuple[dict[str, dict[str, Any]], dict[str, Any] | None, list[Alert]]:
        """Worker thread: the tick's figures, health and new alerts."""
        figures = snapshot_figures(self.store, end_us, self._window_us)
        health = health_from_store(self.store, end_us, self._window_us) or self._ready()
        return figures, health, self._scan_alerts(round(self.clock() * 1_000_000))

    def _ready(self) -> dict[str, Any] | None:
        """Health from readiness, asked at most every READINESS_EVERY_S (worker thread)."""
        if self.readiness is None:
            return None
        if time.monotonic() - self._readiness_at >= READINESS_EVERY_S:
            checks = self.readiness()
            components = {
                name: {"status": "healthy" if check.get("ok") else "unhealthy", "latencyMs": None}
                for name, check in checks.items()
            }
            ok = all(c["status"] == "healthy" for c in components.values())
            self._readiness = {"status": "healthy" if ok else "unhealthy", "components": components}
            self._readiness_at = time.monotonic()
        return self._readiness

    def _update_health(self, health: dict[str, Any] | None, ts_us: int) -> None:
        if health is None:
            return
        signature = (
            health["status"],
            tuple(sorted((name, c["status"]) for name, c in health["components"].items())),
        )
        if signature == self._health_signature:
            return
        self._health_signature = signature
        self._health = encode_event("health_status", health, ts_us=ts_us)
        self._broadcast("health_status", self._health)

    # -- alerts ------------------------------------------------------------------------------

    def _scan_alerts(self, now_us: int) -> list[Alert]:
        """The window's alerts not seen before, sorted by id (worker thread; one at a time).
        Nothing to read, and nothing read, while the store holds no new alert."""
        version = self.store.version(_ALERTS)
        if version == self._alerts_version:
            return []
        self._alerts_version = version  # read first: an alert added during the scan rescans
        horizon = now_us - self._window_us
        found = alerts_between(self.store, horizon, _FAR_FUTURE_US)
        fresh = [alert for alert in found if alert.id not in self._seen]
        for alert in fresh:
            self._seen[alert.id] = alert.ts_us
        if len(self._seen) > 2 * max(len(found), 1):  # forget what left the window
            self._seen = {i: ts for i, ts in self._seen.items() if ts >= horizon}
        return fresh

    def _remember(self, fresh: list[Alert]) -> None:
        """Add alerts to the replay buffer (event loop), evicting the oldest past its size."""
        for alert in fresh:
            bisect.insort(self._buffer, alert)
        excess = len(self._buffer) - self.settings.alert_buffer
        if excess > 0:
            self._floor = max(self._floor, self._buffer[excess - 1].key)
            del self._buffer[:excess]

    def _push_alerts(self, fresh: list[Alert]) -> None:
        """New alerts as one message: a burst of them must not fill a reading client's queue."""
        if fresh:
            self._broadcast("error_alert", b"".join(map(self._encode_alert, fresh)))

    @staticmethod
    def _encode_alert(alert: Alert) -> bytes:
        return encode_event("error_alert", alert.data, ts_us=alert.ts_us, event_id=alert.id)

    def buffered(self) -> Iterable[Alert]:
        return tuple(self._buffer)
