"""Events recorded outside an API replica: forwarded to the replicas, never kept in the process.

A flow run, the CLI or a service importing ``m1lib`` records as a replica does (validation and
the bounded queue of :class:`~m1lib.metrics.recorder.Recorder`, no I/O on the caller's thread);
its ingest thread hands each batch to a :class:`Forwarder` instead of a store:

- with Redis (:class:`RedisForwarder`): each batch goes as compressed columns onto the ingest
  stream ``<prefix>:events:ingest``, which the replicas read as one consumer group
  (:class:`IngestConsumer`): exactly one replica takes each entry, records its events as its own
  (so they reach the shared stream, every replica and ``metric_chunks`` once), then acknowledges
  it; an entry a dead replica took is claimed by another after ``M1_EVENTS_FORWARD_CLAIM_IDLE_S``;
- else with ``M1_API_KEY`` (:class:`HttpForwarder`): batches of at most
  ``M1_EVENTS_INGEST_MAX_EVENTS`` to ``POST /api/m1/events`` of ``M1_API_URL``, at most one
  request per ``M1_EVENTS_FORWARD_INTERVAL_MS`` unless an alert waits;
- with both (:class:`FallbackForwarder`): Redis, and the API while Redis is away, so a flow run
  reporting a Redis outage still reaches the dashboard.

Either keeps a bounded outbox while Redis or the API is away (oldest dropped, counted as
``forward_unavailable``; a refusal such as a revoked key as ``forward_refused``), and at exit
sends what is left within ``M1_EVENTS_FORWARD_EXIT_S``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import redis

from m1lib.errors import M1Error, RateLimitedError, UnavailableError
from m1lib.loops import LoopThreads
from m1lib.metrics.codec import CodecError, DecodedChunk, decode_batch, encode_batch
from m1lib.metrics.columns import RawChunk
from m1lib.metrics.schema import METRICS, Kind, MetricSpec

if TYPE_CHECKING:
    from m1lib.client import ApiClient
    from m1lib.metrics.recorder import Recorder
    from m1lib.settings import Settings

__all__ = [
    "FORWARD_REFUSED",
    "FORWARD_UNAVAILABLE",
    "GROUP",
    "FallbackForwarder",
    "Forwarder",
    "HttpForwarder",
    "IngestConsumer",
    "RedisForwarder",
    "build_forwarder",
    "chunk_rows",
    "ingest_stream",
]

logger = logging.getLogger("m1.metrics")

FORWARD_UNAVAILABLE: Final = "forward_unavailable"  # drop reasons: the outbox overflowed while
FORWARD_REFUSED: Final = "forward_refused"  # Redis or the API was away; the API refused a batch
GROUP: Final = "replicas"  # the consumer group of the ingest stream
_ALERTS: Final = "error_alerts"  # record_now's metric: sent at once, whatever the interval
_SEND_ITEMS: Final = 100  # outbox items one Redis pipeline carries
_READ_BLOCK_MS: Final = 100  # under the Redis client's socket timeout
_READ_COUNT: Final = 100
_REDIS_ERRORS: Final = (redis.RedisError, OSError)

Batch = Sequence[tuple[str, RawChunk]]
CountDrop = Callable[[str, int, str], None]  # Recorder.count_dropped


def ingest_stream(settings: Settings) -> str:
    from m1lib.redis_conn import key

    return key(settings, "events:ingest")


def chunk_rows(
    spec: MetricSpec,
    ts: np.ndarray[Any, Any],
    columns: Mapping[str, np.ndarray[Any, Any]],
    dictionaries: Mapping[str, Sequence[str]],
) -> list[tuple[Any, ...]]:
    """Coded columns as rows of plain values: timestamp (µs), then the declared fields."""
    values: list[list[Any]] = [ts.tolist()]
    for f in spec.declared:
        column = columns[f.name]
        if f.kind is Kind.STR:
            table = np.array([*dictionaries[f.name], None], dtype=object)
            values.append(table[column].tolist())  # code -1: the None at the end
        elif f.kind is Kind.BOOL:
            values.append([None if v < 0 else bool(v) for v in column.tolist()])
        else:
            values.append(column.tolist())
    return list(zip(*values, strict=True))


def _raw_rows(metric: str, chunk: RawChunk) -> list[tuple[Any, ...]]:
    spec = METRICS[metric]
    names = [f.name for f in spec.declared if f.kind is Kind.STR]
    return chunk_rows(
        spec, chunk.ts, chunk.columns, {n: chunk.dictionaries[n].values for n in names}
    )


class _Retry(Exception):
    """The destination is away: keep the outbox, try again later."""


class _Refused(Exception):
    """The destination refused the first ``items`` of the outbox: drop them (counted), go on."""

    def __init__(self, message: str, items: int = 1) -> None:
        super().__init__(message)
        self.items = items


class Forwarder(ABC):
    """The outbox of a forwarding process and the thread that empties it, in order.

    Subclasses turn a batch into outbox items (:meth:`_items`) and send a prefix of the outbox
    (:meth:`_send`, returning how many items went); the outbox holds at most ``outbox_events``
    events, dropping the oldest (counted) past it.
    """

    def __init__(
        self, *, outbox_events: int, interval_s: float, exit_s: float, count_drop: CountDrop
    ) -> None:
        self.outbox_events = outbox_events
        self.interval_s = interval_s
        self.exit_s = exit_s
        self.count_drop = count_drop
        self._outbox: deque[tuple[Any, int, bool]] = deque()  # (item, events, is an alert)
        self._outbox_size = 0
        self._inflight = 0  # items at the head of the outbox being sent right now
        self._lock = threading.Lock()
        self._loops = LoopThreads("m1-forward", logger=logger)
        self._last_send = -float("inf")
        self.sent_events = 0
        self.destination = "?"

    # -- the ingest thread's side ----------------------------------------------------------

    def offer(self, batch: Batch) -> None:
        """Queue a batch (the recorder's ``on_batch``); drops the oldest past the bound."""
        alert = any(metric == _ALERTS for metric, _ in batch)
        items = self._items(batch)
        dropped = 0
        with self._lock:
            for item, events in items:
                self._outbox.append((item, events, alert))
                self._outbox_size += events
            keep = self._inflight + 1  # never what is being sent, nor the newest
            while self._outbox_size > self.outbox_events and len(self._outbox) > keep:
                events = self._outbox[self._inflight][1]  # the oldest not being sent
                del self._outbox[self._inflight]
                self._outbox_size -= events
                dropped += events
        if dropped:
            self.count_drop(FORWARD_UNAVAILABLE, dropped, f"outbox full: {self.destination}")
        self._loops.wake()

    @property
    def pending(self) -> int:
        """Events waiting in the outbox or being sent."""
        with self._lock:
            return self._outbox_size

    @property
    def queued(self) -> int:
        """Events waiting, not counting those being sent right now: at most ``outbox_events``
        (or the newest batch alone, when it is bigger), the bound drops keep."""
        with self._lock:
            sending = sum(events for _, events, _ in list(self._outbox)[: self._inflight])
            return self._outbox_size - sending

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        self._loops.start([("send", self._loop)])

    def close(self) -> None:
        """Stop the thread, then send what is left within ``exit_s``; the rest is counted."""
        self._loops.stop()
        deadline = time.monotonic() + self.exit_s
        while self.pending and time.monotonic() < deadline:
            try:
                self.send_pending(wait=False)
            except _Retry:
                time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
        with self._lock:
            left, self._outbox_size = self._outbox_size, 0
            self._outbox.clear()
        if left:
            self.count_drop(FORWARD_UNAVAILABLE, left, f"unsent at exit: {self.destination}")
        self._close()

    def wait_sent(self, timeout: float) -> bool:
        """Wait until the outbox is empty; False on timeout."""
        return self._loops.wait_drained(lambda: self.pending, timeout)

    # -- sending ---------------------------------------------------------------------------

    def send_pending(self, *, wait: bool = True) -> None:
        """Send the outbox in order; raises _Retry when the destination is away. With
        ``wait``, keeps ``interval_s`` between sends unless an alert is waiting."""
        while True:
            with self._lock:
                if not self._outbox:
                    return
                head = list(self._outbox)[:_SEND_ITEMS]
                alert = any(a for _, _, a in head)
            if wait and not alert:
                left = self._last_send + self.interval_s - time.monotonic()
                if left > 0:  # woken by each offer: an alert arriving meanwhile goes at once
                    self._loops.wake_event.wait(left)
                    self._loops.wake_event.clear()
                    if self._loops.stopping:
                        return
                    continue
            items = [item for item, _, _ in head]
            with self._lock:
                self._inflight = len(head)
            refusal: _Refused | None = None
            try:
                sent = self._send(items)
            except _Refused as error:
                refusal, sent = error, error.items
            except BaseException:
                with self._lock:
                    self._inflight = 0
                raise
            with self._lock:
                self._inflight = 0
                events = 0
                for _ in range(min(sent, len(self._outbox))):
                    events += self._outbox.popleft()[1]
                self._outbox_size -= events
            self._last_send = time.monotonic()
            if refusal is not None:
                self.count_drop(FORWARD_REFUSED, events, str(refusal))
            else:
                self.sent_events += events

    def _loop(self) -> None:
        backoff = self._loops.backoff()
        while self._loops.pause(1.0):
            try:
                self.send_pending()
                backoff.reset()
            except _Retry as error:
                logger.warning(
                    "forwarding events to %s failed, retrying in %.1f s: %s",
                    self.destination,
                    backoff.delay_s,
                    error,
                )
                backoff.wait()
                self._loops.wake()  # retry even if nothing new arrives
            except Exception:  # the thread must outlive a bug: logged, retried later
                logger.exception("forwarding events to %s failed", self.destination)
                backoff.wait()
                self._loops.wake()

    # -- what subclasses provide -----------------------------------------------------------

    @abstractmethod
    def _items(self, batch: Batch) -> list[tuple[Any, int]]: ...

    @abstractmethod
    def _send(self, items: list[Any]) -> int: ...

    @abstractmethod
    def _close(self) -> None:
        """Release the connection (after the last send)."""


class RedisForwarder(Forwarder):
    """Batches onto ``<prefix>:events:ingest`` for the replicas' consumer group."""

    def __init__(
        self,
        client: redis.Redis,
        stream: str,
        *,
        origin: str,
        maxlen: int,
        outbox_events: int,
        exit_s: float,
        count_drop: CountDrop,
    ) -> None:
        super().__init__(
            outbox_events=outbox_events, interval_s=0.0, exit_s=exit_s, count_drop=count_drop
        )
        self.client = client
        self.stream = stream
        self.origin = origin
        self.maxlen = maxlen
        self.destination = f"Redis stream {stream}"

    def _items(self, batch: Batch) -> list[tuple[Any, int]]:
        from m1lib.metrics.stream import _pieces

        items: list[tuple[Any, int]] = []
        for piece in _pieces(batch):
            payload = encode_batch([(METRICS[m], c) for m, c in piece], {"origin": self.origin})
            items.append((payload, sum(c.size for _, c in piece)))
        return items

    def _send(self, items: list[Any]) -> int:
        try:
            pipe = self.client.pipeline(transaction=True)  # all or none: a retry never doubles
            for payload in items:
                fields: dict[Any, Any] = {b"o": self.origin, b"p": payload}
                pipe.xadd(self.stream, fields, maxlen=self.maxlen, approximate=True)
            pipe.execute()
        except _REDIS_ERRORS as error:
            raise _Retry(str(error)) from None
        return len(items)

    def _close(self) -> None:
        self.client.close()


class HttpForwarder(Forwarder):
    """Batches to ``POST /api/m1/events``: all or none per request, so a retry never doubles."""

    def __init__(
        self,
        client: ApiClient,
        *,
        max_events: int,
        max_bytes: int,
        outbox_events: int,
        interval_s: float,
        exit_s: float,
        count_drop: CountDrop,
    ) -> None:
        super().__init__(
            outbox_events=outbox_events, interval_s=interval_s, exit_s=exit_s, count_drop=count_drop
        )
        self.client = client
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.destination = f"{client.base_url}/api/m1/events"

    def _items(self, batch: Batch) -> list[tuple[Any, int]]:
        events = _event_dicts(batch)
        step = self.max_events
        return [
            (events[i : i + step], len(events[i : i + step])) for i in range(0, len(events), step)
        ]

    def _send(self, items: list[Any]) -> int:
        body: list[dict[str, Any]] = []
        taken = 0
        for item in items:
            if taken and len(body) + len(item) > self.max_events:
                break
            body.extend(item)
            taken += 1
        while len(json.dumps(body, separators=(",", ":"))) + 16 > self.max_bytes:
            if taken > 1:
                taken //= 2
                body = [event for item in items[:taken] for event in item]
            elif len(body) > 1:
                self._split_head()
                return 0  # the halves go on the next pass
            else:
                raise _Refused(f"one event is over M1_EVENTS_INGEST_MAX_BYTES ({self.max_bytes})")
        _post(self.client, body, taken)
        return taken

    def _split_head(self) -> None:
        with self._lock:  # called while sending: the head is still in the outbox
            item, events, alert = self._outbox.popleft()
            middle = len(item) // 2
            self._outbox.appendleft((item[middle:], events - middle, alert))
            self._outbox.appendleft((item[:middle], middle, alert))

    def _close(self) -> None:
        self.client.close()


def _event_dicts(batch: Batch) -> list[dict[str, Any]]:
    """A batch as ``POST /api/m1/events`` takes it: one object per event."""
    events: list[dict[str, Any]] = []
    for metric, chunk in batch:
        names = [f.name for f in METRICS[metric].declared]
        for ts, *values in _raw_rows(metric, chunk):
            event: dict[str, Any] = {"metric": metric, "timestamp": ts / 1_000_000}
            event.update(zip(names, values, strict=True))
            events.append(event)
    return events


def _post(client: ApiClient, body: list[dict[str, Any]], items: int) -> None:
    """POST ``body`` (``items`` outbox items); _Retry when the API may recover, _Refused else."""
    try:
        client.record_events(body)
    except (UnavailableError, RateLimitedError) as error:
        raise _Retry(str(error)) from None
    except M1Error as error:
        if type(error) is M1Error:  # a 5xx: the API may recover
            raise _Retry(str(error)) from None
        logger.error("the M1 API refused %d forwarded events: %s", len(body), error)
        raise _Refused(str(error), items) from None


def _fitted(events: list[dict[str, Any]], max_events: int, max_bytes: int) -> list[list[Any]]:
    """``events`` cut into request bodies within the ingest limits (an event alone over
    ``max_bytes`` stays alone: the API refuses it, counted)."""
    bodies: list[list[Any]] = []
    pending = [events[i : i + max_events] for i in range(0, len(events), max_events)]
    while pending:
        body = pending.pop(0)
        if len(body) > 1 and len(json.dumps(body, separators=(",", ":"))) + 16 > max_bytes:
            middle = len(body) // 2
            pending[:0] = [body[:middle], body[middle:]]
        else:
            bodies.append(body)
    return bodies


class _Both:
    """One batch ready for either way: Redis payloads and, should Redis be away, API bodies."""

    __slots__ = ("bodies", "payloads", "posted")

    def __init__(self, payloads: list[bytes], bodies: list[list[Any]]) -> None:
        self.payloads = payloads
        self.bodies = bodies
        self.posted = 0  # bodies the API already took: never sent twice


class FallbackForwarder(Forwarder):
    """Redis first, the API while Redis is away: a flow run's events still reach the replicas
    during the very Redis outage its health check is reporting.

    Each batch is encoded both ways when it is queued (on the ingest thread, never the
    caller's). A send tries Redis (one all-or-none pipeline); when that fails, it POSTs the
    batches in order, remembering how many bodies of the head batch the API took, so nothing is
    sent twice. Redis is tried again at every send, so the stream is back in use as soon as
    Redis answers. While falling back, sends keep the API's ``interval_s``.
    """

    def __init__(self, redis_way: RedisForwarder, api_way: HttpForwarder) -> None:
        super().__init__(
            outbox_events=redis_way.outbox_events,
            interval_s=0.0,
            exit_s=redis_way.exit_s,
            count_drop=redis_way.count_drop,
        )
        self.redis_way = redis_way
        self.api_way = api_way
        self.destination = f"{redis_way.destination} (else {api_way.destination})"
        self.fallback_sends = 0

    def _items(self, batch: Batch) -> list[tuple[Any, int]]:
        payloads = [payload for payload, _ in self.redis_way._items(batch)]
        events = _event_dicts(batch)
        bodies = _fitted(events, self.api_way.max_events, self.api_way.max_bytes)
        return [(_Both(payloads, bodies), len(events))]

    def _send(self, items: list[Any]) -> int:
        try:
            self.redis_way._send([payload for item in items for payload in item.payloads])
        except _Retry as away:
            self.interval_s = self.api_way.interval_s
            return self._post_in_order(items, away)
        self.interval_s = 0.0
        return len(items)

    def _post_in_order(self, items: list[_Both], away: _Retry) -> int:
        for done, item in enumerate(items):
            try:
                while item.posted < len(item.bodies):
                    _post(self.api_way.client, item.bodies[item.posted], 1)
                    item.posted += 1
                    self.fallback_sends += 1
            except _Retry as error:
                if done:
                    return done
                raise _Retry(f"{away}; the API too: {error}") from None
            except _Refused:
                if done:
                    return done  # the refused batch is the head of the next send: dropped then
                raise
        return len(items)

    def _close(self) -> None:
        self.redis_way._close()
        self.api_way._close()


def build_forwarder(settings: Settings, recorder: Recorder) -> Forwarder:
    """The forwarder this configuration asks for: Redis when configured (and the API while Redis
    is away, when ``M1_API_KEY`` is set too), else the API."""
    events = settings.events
    api_way: HttpForwarder | None = None
    if settings.redis_url is None or settings.api.key is not None:
        from m1lib.client import ApiClient

        wait = max(1.0, events.forward_exit_s)
        api_way = HttpForwarder(
            ApiClient.from_settings(settings, timeout_s=wait, max_wait_s=wait),
            max_events=events.ingest_max_events,
            max_bytes=events.ingest_max_bytes,
            outbox_events=events.queue_size,
            interval_s=events.forward_interval_ms / 1000.0,
            exit_s=events.forward_exit_s,
            count_drop=recorder.count_dropped,
        )
    if settings.redis_url is None:
        assert api_way is not None
        return api_way
    from m1lib.redis_conn import make_redis

    client = make_redis(settings)
    assert client is not None
    redis_way = RedisForwarder(
        client,
        ingest_stream(settings),
        origin=recorder.replica_id,
        maxlen=events.stream_maxlen,
        outbox_events=events.queue_size,
        exit_s=events.forward_exit_s,
        count_drop=recorder.count_dropped,
    )
    return redis_way if api_way is None else FallbackForwarder(redis_way, api_way)


class IngestConsumer:
    """A replica's share of the ingest stream: takes entries as one consumer of the group,
    records their events as its own, acknowledges them; claims entries a dead replica took."""

    def __init__(
        self,
        client: redis.Redis,
        stream: str,
        *,
        consumer: str,
        recorder: Recorder,
        claim_idle_s: float,
    ) -> None:
        self.client = client
        self.stream = stream
        self.consumer = consumer
        self.recorder = recorder
        self.claim_idle_ms = max(1, int(claim_idle_s * 1000))
        self.taken_entries = 0  # entries this replica recorded and acknowledged
        self.taken_events = 0
        self.skipped_entries = 0  # damaged or trimmed entries, acknowledged and skipped
        self._group_ready = False
        self._last_claim = -float("inf")
        self._loops = LoopThreads("m1-metrics", logger=logger)

    def start(self) -> None:
        self._loops.start([("forwarded", self._loop)])

    def close(self) -> None:
        self._loops.stop()

    def ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            self.client.xgroup_create(self.stream, GROUP, id="0", mkstream=True)
        except redis.ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise
        self._group_ready = True

    def claim_once(self) -> int:
        """Take over entries another consumer left unacknowledged past the idle time."""
        self.ensure_group()
        handled = 0
        start = "0-0"
        while True:
            answer: Any = self.client.xautoclaim(
                self.stream, GROUP, self.consumer, self.claim_idle_ms, start, count=_READ_COUNT
            )
            start, entries = answer[0], answer[1]
            for entry_id, fields in entries:
                self._handle(entry_id, fields)
            handled += len(entries)
            if not entries or start in (b"0-0", "0-0"):
                return handled

    def read_once(self, block_ms: int | None = _READ_BLOCK_MS) -> int:
        """Take and record new entries; returns how many."""
        self.ensure_group()
        now = time.monotonic()
        if now - self._last_claim >= min(self.claim_idle_ms / 2000.0, 5.0):
            self._last_claim = now
            self.claim_once()
        answer: Any = self.client.xreadgroup(
            GROUP, self.consumer, {self.stream: ">"}, count=_READ_COUNT, block=block_ms
        )
        if not answer:
            return 0
        entries = answer[0][1]
        for entry_id, fields in entries:
            self._handle(entry_id, fields)
        return len(entries)

    def _handle(self, entry_id: Any, fields: dict[bytes, bytes] | None) -> None:
        try:
            chunks: list[DecodedChunk] = decode_batch(fields[b"p"]) if fields else []
        except (KeyError, CodecError) as error:
            logger.warning("forwarded entry %r is damaged; skipped: %s", entry_id, error)
            chunks = []
            self.skipped_entries += 1
        for item in chunks:
            rows = chunk_rows(item.spec, item.ts, item.columns, item.dictionaries)
            self.taken_events += self.recorder.record_trusted_rows(item.spec.name, rows)
        if fields is None:
            self.skipped_entries += 1  # trimmed before anyone read it
        self.client.xack(self.stream, GROUP, entry_id)
        self.taken_entries += 1

    def _loop(self) -> None:
        backoff = self._loops.backoff()
        while not self._loops.stopping:
            try:
                self.read_once()
                backoff.reset()
            except _REDIS_ERRORS as error:
                self._group_ready = False  # a restarted Redis lost the group
                logger.warning(
                    "reading forwarded events from %s failed, retrying in %.1f s: %s",
                    self.stream,
                    backoff.delay_s,
                    error,
                )
                backoff.wait()
