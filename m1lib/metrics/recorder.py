"""Recording events: validate on the caller's thread, store on a background ingest thread.

The caller pays for validation and one append to a bounded queue, nothing else: no lock is held
for longer than a counter update, nothing waits on I/O, and a full queue drops the event and counts
it instead of blocking (a decision path must never stall because analytics are behind). The
ingest thread turns what is queued into columns every ``M1_EVENTS_FLUSH_MS`` (sooner when the
queue is half full) and hands the new chunks to the store and to ``on_batch`` (publishing and
persisting, in ``MetricsRuntime``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from operator import itemgetter
from typing import Any

import numpy as np

from m1lib.errors import InputError, UsageError
from m1lib.metrics.columns import RawChunk
from m1lib.metrics.schema import METRICS, REPLICA_FIELD, metric_spec, timestamp_us
from m1lib.metrics.store import EventStore

__all__ = ["BatchHandler", "Recorder"]

logger = logging.getLogger("m1.metrics")

BatchHandler = Callable[[Sequence[tuple[str, RawChunk]]], None]
"""Receives each ingested batch: (metric, chunk) pairs already in the store."""

_JOIN_TIMEOUT_S = 10.0
_Row = tuple[Any, ...]  # (timestamp_us, value, value, ...) in declared field order


def _now_us() -> int:
    return time.time_ns() // 1000


class Recorder:
    """Validates events and queues them for the store; never blocks, counts what it drops.

    ``MetricsRuntime`` builds one per process; ``m1lib.metrics.record_event`` uses the default.

    >>> recorder = Recorder(store, replica_id="api-1")
    >>> recorder.start()
    >>> recorder.record_event("health_checks", component="db", status="healthy", latencyMs=2.5)
    >>> recorder.flush()
    True
    """

    def __init__(
        self,
        store: EventStore,
        *,
        replica_id: str,
        queue_size: int = 1_000_000,
        flush_s: float = 0.05,
        on_batch: BatchHandler | None = None,
    ) -> None:
        if queue_size < 1:
            raise UsageError(f"queue_size must be at least 1, not {queue_size}")
        self.store = store
        self.replica_id = replica_id
        self.queue_size = queue_size
        self.flush_s = flush_s
        self.on_batch = on_batch
        self._validators = {name: spec.validator() for name, spec in METRICS.items()}
        self._lock = threading.Lock()
        self._items: deque[tuple[str, _Row] | list[tuple[str, _Row]]] = deque()
        self._queued = 0  # events waiting in _items (what the bound counts)
        self._inflight = 0  # events taken by the ingest thread, not yet in the store
        self._inflight_since = 0.0  # monotonic time the oldest in-flight event was queued
        self._dropped = 0
        self._oldest = 0.0  # monotonic time the oldest waiting event was queued
        self._wake = threading.Event()
        self._idle = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.ingested = 0

    # -- the caller's side ---------------------------------------------------------------

    def record_event(self, metric: str, /, *, timestamp: Any = None, **fields: Any) -> None:
        """Record one event; raises InputError for an unknown metric, field or wrong type."""
        self.record(metric, timestamp, fields)

    def record(self, metric: str, timestamp: Any, fields: Mapping[str, Any]) -> None:
        """:meth:`record_event` with the fields as one mapping (saves a copy on hot paths)."""
        validate = self._validators.get(metric)
        if validate is None:
            metric_spec(metric)  # raises, naming the metrics
        assert validate is not None
        values = validate(fields, 0, metric)
        ts = _now_us() if timestamp is None else timestamp_us(timestamp, f"{metric}.timestamp")
        item = (metric, (ts, *values))
        self._enqueue(item)

    def record_trusted(
        self, metric: str, values: tuple[Any, ...], timestamp_us: int | None = None
    ) -> None:
        """Queue one event whose values M1's own code built (the policy engine's decisions).

        ``values`` are the declared fields in order (``METRICS[metric].declared``), already of the
        right plain types (``str``, not a StrEnum member: pass its ``.value``); nothing is
        validated, so this costs a tuple and a queue append. A wrong tuple fails its batch on the
        ingest thread, where it is logged and counted as dropped.
        """
        item = (metric, (_now_us() if timestamp_us is None else timestamp_us, *values))
        self._enqueue(item)

    def _enqueue(self, item: tuple[str, tuple[Any, ...]]) -> None:
        """Append one event, or count it dropped when the queue is full; never blocks."""
        with self._lock:
            if self._queued >= self.queue_size:
                self._dropped += 1
                return
            if not self._queued:
                self._oldest = time.monotonic()
            self._queued += 1
            self._items.append(item)
            if self._queued * 2 > self.queue_size:
                self._wake.set()

    def policy_decision_sink(self) -> Callable[..., None]:
        """The policy engine's recorder: its keyword call, queued through ``record_trusted``.

        The field order is the schema's, checked once here rather than on every decision.
        """
        expected = ("toolName", "scope", "allowed", "reason", "subject", "checkMs")
        declared = tuple(spec.name for spec in METRICS["policy_decisions"].declared)
        if declared != expected:
            raise UsageError(f"policy_decisions fields are {declared}, the sink writes {expected}")
        record = self.record_trusted

        def record_event(
            metric: str,
            /,
            *,
            toolName: str,  # noqa: N803 - the event's field names
            scope: str,
            allowed: bool,
            reason: str,
            subject: str,
            checkMs: float,  # noqa: N803
        ) -> None:
            # str() of a StrEnum member is its value: queued tuples stay plain and untracked.
            record(metric, (toolName, str(scope), allowed, str(reason), subject, checkMs))

        return record_event

    def record_events(self, events: Iterable[Mapping[str, Any]]) -> int:
        """Record many events (``{"metric": ..., "timestamp"?: ..., **fields}``); all are
        validated before any is queued. Returns how many were queued (the rest were dropped)."""
        validators = self._validators
        rows: list[tuple[str, _Row]] = []
        now = _now_us()
        for index, event in enumerate(events):
            if not isinstance(event, Mapping):
                raise InputError(f"events[{index}]", f"is {type(event).__name__}", ["a mapping"])
            metric = event.get("metric")
            validate = validators.get(metric) if isinstance(metric, str) else None
            if validate is None:
                metric_spec(metric, f"events[{index}].metric")
            assert validate is not None
            stamp = event.get("timestamp")
            extra = 1 if stamp is None else 2
            if stamp is None and "timestamp" in event:
                extra = 2
            values = validate(event, extra, f"events[{index}]")
            ts = now if stamp is None else timestamp_us(stamp, f"events[{index}].timestamp")
            rows.append((metric, (ts, *values)))  # type: ignore[arg-type]  # checked above
        if not rows:
            return 0
        with self._lock:
            room = self.queue_size - self._queued
            if room < len(rows):
                self._dropped += len(rows) - max(room, 0)
                rows = rows[: max(room, 0)]
                if not rows:
                    return 0
            if not self._queued:
                self._oldest = time.monotonic()
            self._queued += len(rows)
            self._items.append(rows)
            if self._queued * 2 > self.queue_size:
                self._wake.set()
        return len(rows)

    # -- figures -------------------------------------------------------------------------

    @property
    def dropped_events(self) -> int:
        """Events dropped because the queue was full, since this recorder was built."""
        return self._dropped

    @property
    def queued(self) -> int:
        """Events recorded and not yet in the store (waiting or being ingested)."""
        return self._queued + self._inflight

    @property
    def lag_s(self) -> float:
        """How long the oldest event not yet in the store has waited (0 when none waits)."""
        with self._lock:
            if self._inflight:
                return time.monotonic() - self._inflight_since
            return time.monotonic() - self._oldest if self._queued else 0.0

    # -- the ingest thread ---------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._thread is not None

    def start(self) -> None:
        """Start the ingest thread; a second call does nothing."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="m1-metrics-ingest", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Ingest what is queued, then stop the thread; safe to call twice."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stop.set()
        self._wake.set()
        thread.join(_JOIN_TIMEOUT_S)
        if thread.is_alive():
            logger.warning("metrics ingest thread did not stop within %.0f s", _JOIN_TIMEOUT_S)
        self.ingest_pending()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every event queued so far is in the store; False on timeout.

        Without a running ingest thread, ingests on the calling thread instead.
        """
        if self._thread is None:
            self.ingest_pending()
            return True
        deadline = time.monotonic() + timeout
        with self._idle:
            self._wake.set()
            while self._queued or self._inflight:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(min(left, 0.05))
                self._wake.set()
        return True

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_s)
            self._wake.clear()
            self.ingest_pending()

    def ingest_pending(self) -> int:
        """Move everything queued into the store now; returns the events ingested."""
        with self._lock:  # the queue is free again at once: the bound counts waiting events
            items, self._items = self._items, deque()
            count, self._queued = self._queued, 0
            if count and not self._inflight:
                self._inflight_since = self._oldest
            self._inflight += count
        if not items:
            return 0
        by_metric: dict[str, list[_Row]] = {}
        for item in items:
            pairs = item if isinstance(item, list) else [item]
            for metric, row in pairs:
                by_metric.setdefault(metric, []).append(row)
        try:
            batch = [(metric, self._columnize(metric, rows)) for metric, rows in by_metric.items()]
            for metric, chunk in batch:
                self.store.insert(metric, chunk)
            self.ingested += count
            if self.on_batch is not None:
                self.on_batch(batch)
        except Exception:  # the thread must outlive a bad batch: it is logged and counted
            logger.exception("metrics ingest failed; %d events dropped", count)
            with self._lock:
                self._dropped += count
        finally:
            with self._idle:
                self._inflight -= count
                self._idle.notify_all()
        return count

    def _columnize(self, metric: str, rows: list[_Row]) -> RawChunk:
        """Rows to columns (``itemgetter`` per column: several times faster than ``zip(*rows)``)."""
        spec = METRICS[metric]
        values: dict[str, Sequence[Any] | str] = {
            f.name: list(map(itemgetter(i + 1), rows)) for i, f in enumerate(spec.declared)
        }
        values[REPLICA_FIELD] = self.replica_id
        ts = np.fromiter(map(itemgetter(0), rows), dtype=np.int64, count=len(rows))
        return self.store.encode(metric, ts, values)
