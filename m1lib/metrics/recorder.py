"""Recording events: validate on the caller's thread, store on a background ingest thread.

The caller pays for validation and one append to a bounded queue, nothing else: no lock is held
for longer than a counter update, nothing waits on I/O, and a full queue drops the event and counts
it instead of blocking (a decision path must never stall because analytics are behind). The
ingest thread turns what is queued into columns every ``M1_EVENTS_FLUSH_MS`` (sooner when the
queue is half full) and hands the new chunks to the store and to ``on_batch`` (publishing and
persisting, in ``MetricsRuntime``). ``record_now`` (alerts) wakes it at once, and it hands that
event on as a batch of its own before the rest. Outside a replica (``keep=False``) the chunks only
go to ``on_batch``, which forwards them (:mod:`m1lib.metrics.forward`); a replica takes forwarded
batches back in through ``record_trusted_rows``.

``record_events`` validates a batch column by column (one pass of C-level ``map`` per field and
a numpy range check per number) and queues it as columns; anything that pass does not take
(datetimes, numpy numbers, a bad event) goes through the per-event validator, which names the
first bad event. ``record_trusted`` validates nothing on the caller's thread: the ingest thread
checks every queued row, a column at a time and event by event when a column does not pass, so a
wrong one is dropped alone. Every dropped event is counted by reason (:attr:`Recorder.drops`)
and reported in a log line at most every ``DROP_REPORT_EVERY_S``.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain, compress, repeat
from operator import itemgetter
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from m1lib.errors import InputError, UsageError
from m1lib.loops import LoopThreads
from m1lib.metrics.columns import RawChunk
from m1lib.metrics.schema import (
    MAX_TEXT,
    METRICS,
    REPLICA_FIELD,
    TIMESTAMP_LIMIT_S,
    FieldSpec,
    Kind,
    MetricSpec,
    checked_timestamp_us,
    metric_spec,
    timestamp_us,
)
from m1lib.metrics.store import EventStore

__all__ = ["DROP_REPORT_EVERY_S", "QUEUE_FULL", "BatchHandler", "Recorder"]

logger = logging.getLogger("m1.metrics")

BatchHandler = Callable[[Sequence[tuple[str, RawChunk]]], None]
"""Receives each ingested batch: (metric, chunk) pairs already in the store."""

DROP_REPORT_EVERY_S: Final = 60.0  # at most one log line about dropped events per this period
QUEUE_FULL: Final = "queue_full"  # drop reasons: this, "invalid:<metric>.<field>" (the path of
STORE_ERROR: Final = "store_error"  # the InputError), these two for a store or handler failure
BATCH_HANDLER: Final = "batch_handler"  # (stored, but not published or persisted)

_MAX_SPLITS = 100  # store failures isolated per metric and pass; past it, failing parts drop whole
_Row = tuple[Any, ...]  # (timestamp_us, value, value, ...) in declared field order
_Item = tuple[str, _Row]  # (metric, row): one event of record_event or record_trusted
# What a column holds: text as a list (encoded under the store's lock), numbers as numpy arrays.
_Column = list[Any] | NDArray[Any]
# What the store or numpy raise for a value they cannot hold (a bug: validation should stop it).
_STORE_ERRORS = (TypeError, ValueError, ArithmeticError, LookupError, UsageError)


def _now_us() -> int:
    return time.time_ns() // 1000


@dataclass(frozen=True, slots=True)
class _Batch:
    """Validated events of one metric as columns (declared fields; not the replica)."""

    metric: str
    ts: NDArray[np.int64]
    columns: dict[str, _Column]

    @property
    def size(self) -> int:
        return int(self.ts.size)

    def part(self, lo: int, hi: int) -> _Batch:
        return _Batch(self.metric, self.ts[lo:hi], {k: v[lo:hi] for k, v in self.columns.items()})


_Queued = _Item | list[_Item] | _Batch  # what the queue holds


def _size(item: _Queued) -> int:
    if isinstance(item, _Batch):
        return item.size
    return len(item) if isinstance(item, list) else 1


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
        keep: bool = True,
    ) -> None:
        if queue_size < 1:
            raise UsageError(f"queue_size must be at least 1, not {queue_size}")
        self.store = store
        self.replica_id = replica_id
        self.queue_size = queue_size
        self.flush_s = flush_s
        self.on_batch = on_batch
        # False outside a replica (forwarding): batches go to on_batch only, encoded in a
        # scratch store per pass, so strings do not pile up in a store nobody queries
        self.keep = keep
        self._validators = {name: spec.validator() for name, spec in METRICS.items()}
        self._names = {name: [f.name for f in spec.declared] for name, spec in METRICS.items()}
        self._lock = threading.Lock()
        self._items: deque[_Queued] = deque()
        self._urgent: list[_Item] = []  # record_now: ingested first, as a batch of their own
        self._queued = 0  # events waiting in _items (what the bound counts)
        self._inflight = 0  # events taken by the ingest thread, not yet in the store
        self._inflight_since = 0.0  # monotonic time the oldest in-flight event was queued
        self._queue_full = 0  # drops on the caller's side (kept apart: the hot path adds 1)
        self._drops: dict[str, int] = {}  # drops on the ingest side, by reason
        self._examples: dict[str, str] = {}  # one message per reason since the last report
        self._reported: dict[str, int] = {}  # drops by reason at the last report
        self._reported_at = -math.inf  # monotonic time of the last report
        self._report_lock = threading.Lock()
        self._oldest = 0.0  # monotonic time the oldest waiting event was queued
        self._wake = threading.Event()
        self._idle = threading.Condition(self._lock)
        self._loops = LoopThreads("m1-metrics", wake=self._wake, logger=logger)

    # -- the caller's side ---------------------------------------------------------------

    def record_event(self, metric: str, /, *, timestamp: Any = None, **fields: Any) -> None:
        """Record one event; raises InputError for an unknown metric, field or wrong type."""
        self.record(metric, timestamp, fields)

    def record(
        self, metric: str, timestamp: Any, fields: Mapping[str, Any], urgent: bool = False
    ) -> None:
        """:meth:`record_event` with the fields as one mapping (saves a copy on hot paths)."""
        validate = self._validators.get(metric)
        if validate is None:
            metric_spec(metric)  # raises, naming the metrics
        assert validate is not None
        values = validate(fields, 0, metric)
        ts = _now_us() if timestamp is None else timestamp_us(timestamp, f"{metric}.timestamp")
        self._enqueue((metric, (ts, *values)), urgent)

    def record_now(self, metric: str, timestamp: Any, fields: Mapping[str, Any]) -> None:
        """:meth:`record`, then wake the ingest thread: it stores this event at once, as a batch
        of its own handed to ``on_batch`` (published on the shared stream) before what else is
        queued. For alerts, which must not wait for the next flush; still no I/O here."""
        self.record(metric, timestamp, fields, urgent=True)

    def record_trusted(
        self, metric: str, values: tuple[Any, ...], timestamp_us: int | None = None
    ) -> None:
        """Queue one event whose values M1's own code built (the policy engine's decisions).

        ``values`` are the declared fields in order (``METRICS[metric].declared``), already of the
        right plain types (``str``, not a StrEnum member: pass its ``.value``); nothing is
        validated here, so this costs a tuple and a queue append. The ingest thread checks every
        queued row (a column at a time; event by event when a column does not pass): a wrong one
        is dropped alone, counted by reason and logged.
        """
        item = (metric, (_now_us() if timestamp_us is None else timestamp_us, *values))
        self._enqueue(item)

    def record_trusted_rows(self, metric: str, rows: Sequence[tuple[Any, ...]]) -> int:
        """Queue many events of one metric as ``record_trusted`` would (each row: timestamp in
        microseconds, then the declared fields); checked on the ingest thread. For batches
        another M1 process forwarded. Returns how many were queued (the rest: ``queue_full``)."""
        if metric not in METRICS:
            metric_spec(metric)  # raises, naming the metrics
        items = [(metric, tuple(row)) for row in rows]
        if not items:
            return 0
        with self._lock:
            room = max(self.queue_size - self._queued, 0)
            if room < len(items):
                self._queue_full += len(items) - room
                items = items[:room]
                if not items:
                    return 0
            if not self._queued:
                self._oldest = time.monotonic()
            self._queued += len(items)
            self._items.append(items)
            if self._queued * 2 > self.queue_size:
                self._wake.set()
        return len(items)

    def _enqueue(self, item: _Item, urgent: bool = False) -> None:
        """Append one event, or count it dropped when the queue is full; never blocks. An
        ``urgent`` one (:meth:`record_now`) is ingested at once, ahead of the others."""
        with self._lock:
            if self._queued >= self.queue_size:
                self._queue_full += 1
                return
            if not self._queued:
                self._oldest = time.monotonic()
            self._queued += 1
            if urgent:
                self._urgent.append(item)
            else:
                self._items.append(item)
            if urgent or self._queued * 2 > self.queue_size:
                self._wake.set()

    def policy_decision_sink(self) -> Callable[..., None]:
        """The policy engine's recorder: its keyword call, queued through ``record_trusted``.

        The field order is the schema's, checked once here rather than on every decision.
        """
        expected = ("toolName", "scope", "allowed", "reason", "subject", "checkMs")
        declared = tuple(spec.name for spec in METRICS["policy_decisions"].declared)
        if declared != expected:
            raise UsageError(f"policy_decisions fields are {declared}, the sink writes {expected}")
        enqueue = self._enqueue
        now_ns = time.time_ns

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
            # record_trusted inlined (one call less per decision); str() of a StrEnum member is
            # its value: queued tuples stay plain and untracked.
            row = (now_ns() // 1000, toolName, str(scope), allowed, str(reason), subject, checkMs)
            enqueue((metric, row))

        return record_event

    def record_events(self, events: Iterable[Mapping[str, Any]]) -> int:
        """Record many events (``{"metric": ..., "timestamp"?: ..., **fields}``); all are
        validated before any is queued. Returns how many were queued (the rest were dropped)."""
        batch = events if isinstance(events, list) else list(events)
        if not batch:
            return 0
        now = _now_us()
        items: list[_Queued] | None = _columnar(batch, now)
        if items is None:  # the per-event path: names the first bad event, or takes what
            items = [self._rows(batch, now)]  # the columnar one leaves to it
        total = sum(map(_size, items))
        with self._lock:
            room = max(self.queue_size - self._queued, 0)
            if room < total:
                self._queue_full += total - room
                items = _first(items, room)
                total = room
                if not items:
                    return 0
            if not self._queued:
                self._oldest = time.monotonic()
            self._queued += total
            self._items.extend(items)
            if self._queued * 2 > self.queue_size:
                self._wake.set()
        return total

    def _rows(self, events: list[Any], now: int) -> list[_Item]:
        """Validate event by event; raises InputError naming the first bad one."""
        validators = self._validators
        rows: list[_Item] = []
        for index, event in enumerate(events):
            if not isinstance(event, Mapping):
                raise InputError(f"events[{index}]", f"is {type(event).__name__}", ["a mapping"])
            metric = event.get("metric")
            validate = validators.get(metric) if isinstance(metric, str) else None
            if validate is None:
                metric_spec(metric, f"events[{index}].metric")
            assert validate is not None
            stamp = event.get("timestamp")
            extra = 1 if stamp is None and "timestamp" not in event else 2
            values = validate(event, extra, f"events[{index}]")
            ts = now if stamp is None else timestamp_us(stamp, f"events[{index}].timestamp")
            rows.append((metric, (ts, *values)))  # type: ignore[arg-type]  # checked above
        return rows

    # -- figures -------------------------------------------------------------------------

    @property
    def dropped_events(self) -> int:
        """Events dropped for any reason (see :attr:`drops`) since this recorder was built."""
        with self._lock:
            return self._queue_full + sum(self._drops.values())

    @property
    def drops(self) -> dict[str, int]:
        """Events dropped since this recorder was built, by reason: ``queue_full`` (the queue
        was full), ``invalid:<metric>.<field>`` (an event the ingest thread refused: the path
        of its InputError; ``invalid:metric`` for an unknown metric, ``invalid:<metric>`` for a
        wrong number of values), ``store_error`` (the store failed on an event that passed the
        checks) and ``batch_handler`` (stored, but publishing or persisting it failed)."""
        with self._lock:
            drops = dict(self._drops)
            if self._queue_full:
                drops[QUEUE_FULL] = self._queue_full
        return drops

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
        return self._loops.running

    def start(self) -> None:
        """Start the ingest thread; a second call does nothing."""
        self._loops.start([("ingest", self._loop)])

    def close(self) -> None:
        """Stop the thread, then ingest what is still queued; safe to call twice."""
        if self._loops.stop():
            self.ingest_pending()  # what came in after the thread's last pass: none is lost
            self.report_drops(force=True)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every event queued so far is in the store; False on timeout.

        Without a running ingest thread, ingests on the calling thread instead.
        """
        if not self._loops.running:
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
        while self._loops.pause(self.flush_s):
            self.ingest_pending()

    def ingest_pending(self) -> int:
        """Move everything queued into the store now; returns the events taken from the queue
        (stored, or dropped and counted by reason)."""
        with self._lock:  # the queue is free again at once: the bound counts waiting events
            urgent, self._urgent = self._urgent, []
            items, self._items = self._items, deque()
            count, self._queued = self._queued, 0
            if count and not self._inflight:
                self._inflight_since = self._oldest
            self._inflight += count
        try:
            if urgent:  # record_now's events first, as a batch of their own
                self._ingest(urgent, len(urgent))
            if items:
                self._ingest(items, count - len(urgent))
        finally:
            with self._idle:
                self._inflight -= count
                self._idle.notify_all()
        self.report_drops()
        return count

    def _ingest(self, items: Iterable[_Queued], count: int) -> None:
        """Store ``count`` queued events and hand them to ``on_batch`` as one batch."""
        with self._lock:
            dropped_before = sum(self._drops.values())
        stored = 0
        handing = False  # True once the batch is in the store and on_batch has it
        try:
            batch = self._store_all(items)
            stored = sum(chunk.size for _, chunk in batch)
            if batch and self.on_batch is not None:
                handing = True
                self.on_batch(batch)
        except Exception as error:  # the thread must outlive a bug: logged, counted, goes on
            if handing:  # stored, but neither published nor persisted
                reason, lost = BATCH_HANDLER, stored
            else:
                with self._lock:
                    lost = count - stored - (sum(self._drops.values()) - dropped_before)
                reason = STORE_ERROR
            if self._drop(reason, max(lost, 0), repr(error)):
                logger.exception("metrics ingest failed (%s)", reason)

    def _store_all(self, items: Iterable[_Queued]) -> list[tuple[str, RawChunk]]:
        """Check the queued rows, then store each metric's events as one chunk (or, when the
        store fails on some, as the chunks around them); returns what the store took."""
        parts: dict[str, list[list[_Row] | _Batch]] = {}  # per metric, in arrival order
        open_runs: dict[str, list[_Row]] = {}  # per metric, the run of rows still growing
        for item in items:
            if type(item) is tuple:  # one event: the common case, kept lean
                metric, row = item
                try:
                    run = open_runs.get(metric)
                except TypeError:  # an unhashable metric: refused below
                    run = None
                if run is None:
                    run = self._open_run(parts, open_runs, metric)
                    if run is None:
                        continue
                run.append(row)
            elif isinstance(item, list):
                for metric, row in item:
                    run = open_runs.get(metric)  # record_events: checked metrics
                    if run is None:
                        run = self._open_run(parts, open_runs, metric)
                        assert run is not None
                    run.append(row)
            else:
                assert isinstance(item, _Batch)
                parts.setdefault(item.metric, []).append(item)
                open_runs.pop(item.metric, None)  # rows after it start a new run
        stored: list[tuple[str, RawChunk]] = []
        store = self.store if self.keep else EventStore()
        for metric, runs in parts.items():
            batches = [
                run if isinstance(run, _Batch) else self._checked(metric, run) for run in runs
            ]
            whole = batches[0] if len(batches) == 1 else _concat(batches)
            if not whole.size:
                continue
            for chunk in self._encode(whole, store):
                if not self.keep:
                    stored.append((metric, chunk))
                    continue
                try:
                    self.store.insert(metric, chunk)
                except _STORE_ERRORS as error:
                    if self._drop(STORE_ERROR, chunk.size, f"{metric}: {error!r}"):
                        logger.exception("metrics store refused %d %s events", chunk.size, metric)
                    continue
                stored.append((metric, chunk))
        return stored

    def _open_run(
        self,
        parts: dict[str, list[list[_Row] | _Batch]],
        open_runs: dict[str, list[_Row]],
        metric: Any,
    ) -> list[_Row] | None:
        """A new run of rows for ``metric`` (None, counted, for a metric that is not one)."""
        if not (isinstance(metric, str) and metric in METRICS):
            self._drop("invalid:metric", 1, f"metric: {metric!r:.100} is not a metric")
            return None
        run: list[_Row] = []
        parts.setdefault(metric, []).append(run)
        open_runs[metric] = run
        return run

    def _checked(self, metric: str, rows: list[_Row]) -> _Batch:
        """Queued rows as columns, checked as validation checks (record_trusted validated
        nothing): a column at a time, and event by event only when a column does not pass."""
        batch = _row_columns(METRICS[metric], rows)
        if batch is not None:
            return batch
        good = []
        for row in rows:
            try:
                good.append(self._check(metric, row))
            except InputError as error:
                self._drop(f"invalid:{error.path}", 1, str(error))
        return _Batch(
            metric,
            np.fromiter(map(itemgetter(0), good), dtype=np.int64, count=len(good)),
            {
                f.name: list(map(itemgetter(i + 1), good))
                for i, f in enumerate(METRICS[metric].declared)
            },
        )

    def _check(self, metric: str, row: _Row) -> _Row:
        """One row as validation would have made it; InputError if it is wrong."""
        names = self._names[metric]
        if len(row) != len(names) + 1:
            raise InputError(metric, f"has {len(row) - 1} values", names)
        ts = checked_timestamp_us(row[0], f"{metric}.timestamp")
        return (ts, *self._validators[metric](dict(zip(names, row[1:], strict=True)), 0, metric))

    def _encode(self, batch: _Batch, store: EventStore) -> list[RawChunk]:
        """The batch as store chunks, in order. When the store fails on it, halves it until each
        failing event is alone (at most ``_MAX_SPLITS`` failures), drops and counts those."""
        chunks: list[RawChunk] = []
        failures = 0
        pending = [batch]
        while pending:
            part = pending.pop()
            columns: dict[str, _Column | str] = {**part.columns, REPLICA_FIELD: self.replica_id}
            try:
                chunks.append(store.encode(part.metric, part.ts, columns))
                continue
            except _STORE_ERRORS as error:
                failures += 1
                if part.size == 1 or failures > _MAX_SPLITS:
                    self._drop(STORE_ERROR, part.size, f"{part.metric}: {error!r}")
                    continue
            middle = part.size // 2
            pending += [part.part(middle, part.size), part.part(0, middle)]  # first half next
        return chunks

    # -- dropped events ------------------------------------------------------------------

    def count_dropped(self, reason: str, events: int, example: str) -> None:
        """Count events lost after the ingest thread handed them on (forwarding): they show in
        :attr:`drops` and the periodic report like the recorder's own."""
        if events > 0:
            self._drop(reason, events, example)

    def _drop(self, reason: str, events: int, example: str) -> bool:
        """Count dropped events; True when this is the reason's first since the last report."""
        with self._lock:
            self._drops[reason] = self._drops.get(reason, 0) + events
            first = reason not in self._examples
            if first:
                self._examples[reason] = example
        return first

    def report_drops(self, *, force: bool = False) -> bool:
        """Log the events dropped since the last report, by reason with one example each, in
        one line at most once per ``DROP_REPORT_EVERY_S`` (unless ``force``); True if it did."""
        now = time.monotonic()
        if not force and now - self._reported_at < DROP_REPORT_EVERY_S:
            return False
        if not self._report_lock.acquire(blocking=False):
            return False
        try:
            drops = self.drops
            new = {
                reason: events - self._reported.get(reason, 0)
                for reason, events in sorted(drops.items())
                if events > self._reported.get(reason, 0)
            }
            if not new:
                return False
            with self._lock:
                examples, self._examples = self._examples, {}
            self._reported, self._reported_at = drops, now
        finally:
            self._report_lock.release()
        text = "; ".join(
            f"{reason} {events}" + (f" (e.g. {examples[reason]})" if reason in examples else "")
            for reason, events in new.items()
        )
        logger.warning(
            "metrics dropped %d events since the last report: %s", sum(new.values()), text
        )
        return True


# -- the columnar path of record_events --------------------------------------------------------


def _first(items: list[_Queued], n: int) -> list[_Queued]:
    """The first ``n`` events of ``items`` (what fits in the queue)."""
    kept: list[_Queued] = []
    for item in items:
        size = _size(item)
        if size <= n:
            kept.append(item)
            n -= size
        elif n > 0:
            assert not isinstance(item, tuple)  # a single event fits when n > 0
            kept.append(item.part(0, n) if isinstance(item, _Batch) else item[:n])
            n = 0
    return kept


def _columnar(events: list[Any], now_us: int) -> list[_Queued] | None:
    """The events as validated columns, one batch per metric, or None when any event needs
    the per-event path (which takes datetimes, numpy numbers, integral floats for integers,
    StrEnum members, and names the first bad event)."""
    if set(map(type, events)) != {dict}:
        return None
    try:
        metrics = list(map(itemgetter("metric"), events))
        names = dict.fromkeys(metrics)
    except (KeyError, TypeError):  # a missing or unhashable metric
        return None
    specs = [METRICS.get(name) if type(name) is str else None for name in names]
    batches: list[_Queued] = []
    for name, spec in zip(names, specs, strict=True):
        if spec is None:
            return None
        group = events if len(names) == 1 else list(compress(events, map(name.__eq__, metrics)))
        batch = _validated_columns(spec, group, now_us)
        if batch is None:
            return None
        batches.append(batch)
    return batches


def _validated_columns(
    spec: MetricSpec, events: list[dict[str, Any]], now_us: int
) -> _Batch | None:
    """Events (dicts) of one metric as columns, checked as the per-event validator checks
    them, or None when it would have to convert a value or raise."""
    n = len(events)
    keys = np.ones(n, dtype=np.int64)  # keys each event has: "metric", then each field present
    columns: dict[str, _Column] = {}
    try:
        for f in spec.declared:
            try:
                column = list(map(itemgetter(f.name), events))
                keys += 1
            except KeyError:
                if not f.optional:
                    return None
                column = list(map(dict.get, events, repeat(f.name)))
                keys += np.fromiter(map(dict.__contains__, events, repeat(f.name)), np.int64, n)
            checked = _CHECKS[f.kind](f, column)
            if checked is None:
                return None
            columns[f.name] = checked
        extra = np.fromiter(map(len, events), np.int64, n) - keys  # 1 where a timestamp is
        try:
            stamps = list(map(itemgetter("timestamp"), events))
            stamped = extra == 1
        except KeyError:
            stamps = list(map(dict.get, events, repeat("timestamp")))
            stamped = extra == 0 if not extra.any() else None
        if stamped is None:  # some events have one more key: a timestamp, or an unknown field
            has = np.fromiter(map(dict.__contains__, events, repeat("timestamp")), np.int64, n)
            stamped = extra == has
        if not stamped.all():  # an unknown field: the per-event path names it
            return None
        ts = _timestamps(stamps, now_us)
    except (TypeError, ValueError, OverflowError):  # unhashable text, a huge int: per event
        return None
    return None if ts is None else _Batch(spec.name, ts, columns)


def _text(f: FieldSpec, column: list[Any]) -> _Column | None:
    distinct = set(column)
    if f.optional:
        distinct.discard(None)
    if any(type(value) is not str for value in distinct):  # StrEnum members: per event
        return None
    if f.choices is not None and not distinct.issubset(f.choices):
        return None
    if distinct and max(map(len, distinct)) > MAX_TEXT:
        return None
    return column


def _booleans(f: FieldSpec, column: list[Any]) -> _Column | None:
    if set(map(type, column)) != {bool}:
        return None
    return np.array(column, dtype=np.int8)


def _integers(f: FieldSpec, column: list[Any]) -> _Column | None:
    if set(map(type, column)) != {int}:  # integral floats, numpy integers: per event
        return None
    values = np.fromiter(column, np.int64, len(column))  # OverflowError beyond int64
    limit = f.limit
    assert limit is not None
    return values if -limit <= values.min() and values.max() <= limit else None


def _floats(f: FieldSpec, column: list[Any]) -> _Column | None:
    if not set(map(type, column)) <= {float, int}:
        return None
    values = np.fromiter(column, np.float64, len(column))  # no dtype discovery: 3x np.array
    limit = f.limit
    assert limit is not None
    # NaN fails both comparisons, infinity the range
    return values if -limit <= values.min() and values.max() <= limit else None


_CHECKS: Mapping[Kind, Callable[[FieldSpec, list[Any]], _Column | None]] = {
    Kind.STR: _text,
    Kind.BOOL: _booleans,
    Kind.INT: _integers,
    Kind.FLOAT: _floats,
}


def _timestamps(column: list[Any], now_us: int) -> NDArray[np.int64] | None:
    """Microseconds of epoch-second timestamps, or now for all-null; None for anything else
    (datetimes, a mix with nulls): those go through ``timestamp_us`` one by one."""
    types = set(map(type, column))
    if types == {type(None)}:
        return np.full(len(column), now_us, dtype=np.int64)
    if not types <= {float, int}:
        return None
    seconds = np.fromiter(column, np.float64, len(column))
    if not (seconds.min() >= 0 and seconds.max() < TIMESTAMP_LIMIT_S):  # NaN fails
        return None
    # as timestamp_us: round(seconds * 1e6), half to even
    return np.rint(seconds * 1_000_000).astype(np.int64)


def _row_columns(spec: MetricSpec, rows: list[_Row]) -> _Batch | None:
    """Rows (timestamp in microseconds, then the declared fields) as checked columns, or None
    when a row or a value does not pass (``itemgetter`` per column: several times faster than
    ``zip(*rows)``)."""
    if set(map(len, rows)) != {len(spec.declared) + 1}:
        return None
    try:
        ts = _microseconds(list(map(itemgetter(0), rows)))
        if ts is None:
            return None
        columns: dict[str, _Column] = {}
        for i, f in enumerate(spec.declared, 1):
            column = _CHECKS[f.kind](f, list(map(itemgetter(i), rows)))
            if column is None:
                return None
            columns[f.name] = column
    except (TypeError, ValueError, OverflowError):  # unhashable text, a huge int: row by row
        return None
    return _Batch(spec.name, ts, columns)


def _microseconds(column: list[Any]) -> NDArray[np.int64] | None:
    """A column of microsecond timestamps (ints, as M1's own code passes them), or None."""
    if set(map(type, column)) != {int}:
        return None
    ts = np.fromiter(column, np.int64, len(column))  # OverflowError beyond int64
    return ts if ts.min() >= 0 and ts.max() < TIMESTAMP_LIMIT_S * 1_000_000 else None


def _concat(batches: list[_Batch]) -> _Batch:
    """One batch of several of one metric, in order; text columns stay lists."""

    def join(parts: list[_Column]) -> _Column:
        if all(isinstance(part, list) for part in parts):
            return list(chain.from_iterable(parts))
        return np.concatenate([np.asarray(part) for part in parts])

    first = batches[0]
    return _Batch(
        first.metric,
        np.concatenate([b.ts for b in batches]),
        {name: join([b.columns[name] for b in batches]) for name in first.columns},
    )
