"""One process's metrics: the store, the recorder and the threads that share and persist events.

:class:`MetricsRuntime` is what the API process builds once (``start()`` in its lifespan,
``close()`` at shutdown). Without a database it keeps nothing across restarts; without Redis it
sees only its own events; with both, every replica answers with every replica's events and a
restarted replica rebuilds its history from ``metric_chunks`` and the stream.

The module-level ``record_event``/``record_events``/``run_query`` of :mod:`m1lib.metrics` use a
process-wide default runtime: the one the API installs with :func:`install_default`, or else one
built on first use. Built outside a replica with Redis or ``M1_API_KEY`` configured, it forwards
(:mod:`m1lib.metrics.forward`): events go to the replicas, queries over HTTP to the API, and what
is queued is sent at exit; with neither, events stay in this process's memory.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from m1lib.errors import BusyError, InputError, M1Error, UsageError
from m1lib.loops import LoopThreads
from m1lib.metrics.budget import Limits, QueryCancelled
from m1lib.metrics.codec import DecodedChunk
from m1lib.metrics.columns import RawChunk
from m1lib.metrics.engine import execute
from m1lib.metrics.query import Query, parse_query
from m1lib.metrics.recorder import Recorder
from m1lib.metrics.result import QueryResult
from m1lib.metrics.schema import METRICS
from m1lib.metrics.store import EventStore

if TYPE_CHECKING:
    import redis

    from m1lib.client import ApiClient
    from m1lib.control import CommandRegistry
    from m1lib.db.session import Database
    from m1lib.metrics.forward import Forwarder, IngestConsumer
    from m1lib.metrics.persist import Coverage
    from m1lib.metrics.stream import StreamConsumer, StreamPublisher
    from m1lib.settings import Settings

# SQLAlchemy and redis load only for a runtime given a database or Redis: importing m1lib.metrics
# (and recording in a process that has neither) stays light.

__all__ = ["MetricsRuntime", "default_runtime", "install_default", "register_metrics_commands"]

logger = logging.getLogger("m1.metrics")

_COMPACT_EVERY_S: Final = 3600.0  # memory compaction without waiting for the flow's command
_PENDING_FACTOR: Final = 10  # unpersisted own events kept while the database is away, x queue size


def _db_errors() -> tuple[type[Exception], ...]:
    """What a database outage raises: M1's wrapped errors and SQLAlchemy's own."""
    from sqlalchemy import exc

    return (M1Error, exc.SQLAlchemyError)


def limits_from(settings: Settings) -> Limits:
    q = settings.query
    return Limits(
        max_range=q.max_range,
        max_groups=q.max_groups,
        max_rows=q.max_rows,
        timeout_s=q.timeout_s,
        max_memory_bytes=q.max_memory_mb << 20,
        max_detect_cells=q.max_detect_cells,
    )


class MetricsRuntime:
    """The event store of one process, with recording, the shared stream and persistence.

    >>> metrics = MetricsRuntime(settings, db=db, redis_client=make_redis(settings),
    ...                          replica_id=settings.replica_id)
    >>> metrics.start()
    >>> metrics.recorder.record_event("error_alerts", level="warning", source="cache", message="slow")
    >>> metrics.run_query({"metric": "error_alerts", "timeRange": "1h", "groupBy": ["level"]})
    >>> metrics.close()
    """

    def __init__(
        self,
        settings: Settings,
        *,
        db: Database | None = None,
        redis_client: redis.Redis | None = None,
        replica_id: str | None = None,
        clock: Callable[[], float] = time.time,
        forwarding: bool = False,
    ) -> None:
        """``forwarding``: a process outside a replica that hands its events on (Redis when
        configured, else the API) and asks the API its queries; it keeps no events itself."""
        if forwarding and (db is not None or redis_client is not None):
            raise UsageError("a forwarding runtime has no database or Redis of its own")
        self.settings = settings
        self.db = db
        self.redis = redis_client
        self.replica_id = replica_id or settings.replica_id
        self.run_id = uuid.uuid4().hex[:16]  # this process's life: own entries on the stream
        self.store = EventStore.from_settings(settings, clock=clock)
        self.limits = limits_from(settings)
        self.recorder = Recorder(
            self.store,
            replica_id=self.replica_id,
            queue_size=settings.events.queue_size,
            flush_s=settings.events.flush_ms / 1000.0,
            on_batch=self._on_batch,
            keep=not forwarding,
        )
        self._lock = threading.Lock()
        self._seq = 0
        self._pending: deque[tuple[int, Sequence[tuple[str, RawChunk]], int]] = deque()
        self._pending_events = 0
        self._persisted: dict[str, Coverage] = {}  # origin replica -> what its chunks hold
        self._applied: dict[tuple[str, str], tuple[int, int]] = {}  # last (seq, piece) per run
        self.unpersisted_events = 0
        self.loaded_chunks = 0
        self.history_loaded = db is None  # nothing to load without a database
        self.publisher: StreamPublisher | None = None
        self.consumer: StreamConsumer | None = None
        self.ingest: IngestConsumer | None = None  # batches other processes forwarded
        self.forwarder: Forwarder | None = None
        self._api: ApiClient | None = None
        if forwarding:
            from m1lib.metrics.forward import build_forwarder

            self.forwarder = build_forwarder(settings, self.recorder)
        if redis_client is not None:
            from m1lib.metrics.stream import StreamConsumer, StreamPublisher
            from m1lib.redis_conn import key

            stream = key(settings, "events")
            self.publisher = StreamPublisher(
                redis_client,
                stream,
                origin=self.replica_id,
                run=self.run_id,
                maxlen=settings.events.stream_maxlen,
                outbox_events=settings.events.queue_size,
            )
            self.consumer = StreamConsumer(
                redis_client, stream, apply=self._apply_remote, skip=self._skip
            )
            from m1lib.metrics.forward import IngestConsumer, ingest_stream

            self.ingest = IngestConsumer(
                redis_client,
                ingest_stream(settings),
                consumer=self.replica_id,
                recorder=self.recorder,
                claim_idle_s=settings.events.forward_claim_idle_s,
            )
        self._loops = LoopThreads("m1-metrics", logger=logger)
        self._started = False
        self._query_slots = threading.BoundedSemaphore(settings.query.max_concurrent)
        self.query_counts = {
            "running": 0,
            "completed": 0,
            "refused_busy": 0,
            "cancelled": 0,
            "refused_input": 0,
        }

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Load persisted history, then start recording, sharing and persisting; idempotent.

        A database that is down at start-up costs the history, not the replica: it starts
        without it (``history_loaded`` is False) and does not load it later, since the stream
        may by then have given it batches those chunks hold.
        """
        if self._started:
            return
        self._started = True
        if self.db is not None:
            try:
                self.load_history()
                self.history_loaded = True
            except _db_errors() as error:
                logger.warning("metrics history not loaded, starting without it: %s", error)
        self.recorder.start()
        if self.forwarder is not None:
            self.forwarder.start()
        if self.publisher is not None:
            self.publisher.start()
        if self.consumer is not None:
            self.consumer.start()
        if self.ingest is not None:
            self.ingest.start()
        self._loops.start([("maintain", self._maintenance_loop)])

    @property
    def started(self) -> bool:
        """Between ``start`` and ``close``."""
        return self._started

    def close(self) -> None:
        """Ingest, publish and persist what is queued, then stop every thread; idempotent."""
        if not self._started:
            return
        self._started = False
        if self.ingest is not None:
            self.ingest.close()  # takes no more forwarded batches; what it took is queued
        self.recorder.close()
        if self.forwarder is not None:
            self.forwarder.close()  # sends what is left, within M1_EVENTS_FORWARD_EXIT_S
            self.recorder.report_drops(force=True)
        if self._api is not None:
            self._api.close()
        if self.publisher is not None:
            self.publisher.close()
        if self.consumer is not None:
            self.consumer.close()
        self._loops.stop()
        if self.db is not None:
            try:
                self.persist()
            except _db_errors() as error:
                logger.warning("metrics not persisted at shutdown: %s", error)

    def load_history(self) -> int:
        """Read persisted chunks into the store (start-up); returns the chunks loaded."""
        from m1lib.metrics.persist import iter_chunks, merge_coverage

        assert self.db is not None
        loaded = 0
        for item in iter_chunks(
            self.db, self.settings, now=datetime.fromtimestamp(self.store.clock(), UTC)
        ):
            origin = str(item.header.get("replica", ""))
            self._persisted[origin] = merge_coverage(
                self._persisted.get(origin, {}), item.header.get("coverage", {})
            )
            metric = item.spec.name
            if isinstance(item, DecodedChunk):
                chunk = self.store.import_coded(metric, item.ts, item.columns, item.dictionaries)
                self.store.insert(metric, chunk, raw=True, rollups=False)
            else:
                self.store.insert_block(
                    metric, self.store.import_block(metric, item.block, item.dictionaries)
                )
            loaded += 1
        self.loaded_chunks += loaded
        if loaded:
            logger.info("metrics history: %d chunks loaded from the database", loaded)
        return loaded

    # -- recording and querying ------------------------------------------------------------

    def record_event(self, metric: str, /, *, timestamp: Any = None, **fields: Any) -> None:
        self.recorder.record(metric, timestamp, fields)

    def record_events(self, events: Iterable[Mapping[str, Any]]) -> int:
        return self.recorder.record_events(events)

    def run_query(
        self,
        query: Query | Mapping[str, Any] | str,
        *,
        cancel: threading.Event | None = None,
    ) -> QueryResult:
        """Answer a query (model, mapping or JSON text) from this replica's store, or, in a
        forwarding runtime, from the API (``POST /api/m1/dashboard/query`` with M1_API_KEY).

        At most ``M1_QUERY_MAX_CONCURRENT`` queries compute at once; one more is refused at
        once with :class:`BusyError` (503), so heavy queries cannot exhaust the process. Setting
        ``cancel`` (the caller went away) stops the query at its next step: QueryCancelled.
        """
        parsed = parse_query(query)
        if self.forwarder is not None:
            return self._remote_query(parsed)
        if not self._query_slots.acquire(blocking=False):
            self._count("refused_busy")
            raise BusyError(
                f"this replica is already computing {self.settings.query.max_concurrent} "
                "queries (M1_QUERY_MAX_CONCURRENT); try again shortly",
                retry_after_s=1,
            )
        self._count("running")
        outcome = "completed"
        try:
            snapshot = self.store.snapshot(parsed.metric)
            return execute(
                parsed, snapshot, self.limits, dropped_events=self.dropped_events, cancel=cancel
            )
        except QueryCancelled:
            outcome = "cancelled"
            raise
        except InputError:
            outcome = "refused_input"
            raise
        finally:
            self._query_slots.release()
            self._count("running", -1)
            self._count(outcome)

    def _remote_query(self, query: Query) -> QueryResult:
        from m1lib.client import ApiClient

        with self._lock:
            if self._api is None:
                self._api = ApiClient.from_settings(self.settings)
            api = self._api
        return QueryResult.from_dict(api.query(query_json(query)))

    def _count(self, name: str, delta: int = 1) -> None:
        with self._lock:
            self.query_counts[name] += delta

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every event recorded so far is in the store and (with Redis) published."""
        deadline = time.monotonic() + timeout
        if not self.recorder.flush(timeout):
            return False
        if self.forwarder is not None and self._started:
            return self.forwarder.wait_sent(max(0.0, deadline - time.monotonic()))
        if self.publisher is not None and self._started:
            return self.publisher.wait_sent(max(0.0, deadline - time.monotonic()))
        return True

    def sync(self, timeout: float = 10.0) -> bool:
        """Wait until this replica has read everything on the shared stream so far."""
        if self.consumer is None:
            return True
        return self.consumer.caught_up(timeout)

    # -- figures ---------------------------------------------------------------------------

    @property
    def dropped_events(self) -> int:
        """Events this replica dropped: its recording queue was full, or the ingest thread
        refused or could not store them (by reason: :attr:`drops`)."""
        return self.recorder.dropped_events

    @property
    def drops(self) -> dict[str, int]:
        """Events this replica dropped, by reason (``Recorder.drops``)."""
        return self.recorder.drops

    @property
    def store_lag_s(self) -> float:
        """How far the store is behind: the oldest queued local event, or the last remote batch."""
        remote = self.consumer.lag_s if self.consumer is not None else 0.0
        return max(self.recorder.lag_s, remote)

    def stats(self) -> dict[str, Any]:
        tiers = self.store.stats()
        return {
            "replica": self.replica_id,
            "droppedEvents": self.dropped_events,
            "droppedByReason": self.drops,
            "storeLagS": round(self.store_lag_s, 3),
            "unpublishedEvents": self.publisher.unpublished_events if self.publisher else 0,
            "forwardedEvents": self.forwarder.sent_events if self.forwarder else 0,
            "takenForwardedEvents": self.ingest.taken_events if self.ingest else 0,
            "unpersistedEvents": self.unpersisted_events,
            "queries": dict(self.query_counts),
            "tiers": [
                {
                    "metric": t.metric,
                    "resolution": t.resolution,
                    "points": t.points,
                    "bytes": t.bytes,
                }
                for t in tiers
                if t.points
            ],
        }

    # -- sharing ---------------------------------------------------------------------------

    def _on_batch(self, batch: Sequence[tuple[str, RawChunk]]) -> None:
        """Called by the ingest thread with each batch of this replica's own events."""
        size = sum(chunk.size for _, chunk in batch)
        if self.forwarder is not None:
            self.forwarder.offer(batch)
            return
        with self._lock:
            self._seq += 1
            seq = self._seq
            if self.db is not None:
                self._pending.append((seq, batch, size))
                self._pending_events += size
                limit = self.settings.events.queue_size * _PENDING_FACTOR
                while self._pending_events > limit and len(self._pending) > 1:
                    _, _, dropped = self._pending.popleft()
                    self._pending_events -= dropped
                    self.unpersisted_events += dropped
        if self.publisher is not None:
            self.publisher.offer(seq, batch)

    def _skip(self, origin: str, run: str, seq: int, piece: int) -> bool:
        from m1lib.metrics.persist import covered

        if origin == self.replica_id and run == self.run_id:
            return True  # our own: applied when recorded
        if covered(self._persisted.get(origin, {}), run, seq):
            return True  # loaded from metric_chunks at start-up
        last = self._applied.get((origin, run))
        return last is not None and (seq, piece) <= last  # a retried publish

    def _apply_remote(
        self, origin: str, run: str, seq: int, piece: int, chunks: list[DecodedChunk]
    ) -> None:
        for item in chunks:
            metric = item.spec.name
            chunk = self.store.import_coded(metric, item.ts, item.columns, item.dictionaries)
            self.store.insert(metric, chunk)
        self._applied[(origin, run)] = (seq, piece)

    # -- persisting and maintenance --------------------------------------------------------

    def persist(self) -> int:
        """Write this replica's unpersisted batches to ``metric_chunks`` now; returns events.

        On a database error the batches stay queued for the next attempt (and it raises).
        """
        if self.db is None:
            return 0
        from m1lib.metrics.persist import chunk_rows, merge_coverage, write_chunks

        with self._lock:
            taken = list(self._pending)
            self._pending.clear()
            self._pending_events = 0
        if not taken:
            return 0
        try:
            rows = []
            for seqs, metric, chunk in _by_metric(taken):
                coverage = merge_coverage({self.run_id: [[s, s] for s in seqs]})
                rows.extend(
                    chunk_rows(METRICS[metric], chunk, replica=self.replica_id, coverage=coverage)
                )
            write_chunks(self.db, rows)
        except _db_errors():
            with self._lock:
                self._pending.extendleft(reversed(taken))
                self._pending_events += sum(size for _, _, size in taken)
            raise
        return sum(size for _, _, size in taken)

    def compact(self) -> dict[str, int]:
        """Retention and merging in memory, then persist (the ``metrics.compact`` command)."""
        report = self.store.compact()
        if self.db is not None:
            report["persisted_events"] = self.persist()
        return report

    def _maintenance_loop(self) -> None:
        period = self.settings.events.persist_s
        last_compact = time.monotonic()
        while self._loops.sleep(period):
            try:
                if time.monotonic() - last_compact >= _COMPACT_EVERY_S:
                    last_compact = time.monotonic()
                    self.store.compact()
                else:
                    self.store.apply_retention()
                self.persist()
            except _db_errors() as error:
                logger.warning("persisting metrics failed, retrying in %.0f s: %s", period, error)


def _by_metric(
    taken: Sequence[tuple[int, Sequence[tuple[str, RawChunk]], int]],
) -> list[tuple[list[int], str, RawChunk]]:
    """Pending batches as one sorted chunk per metric (per dictionary generation)."""
    groups: dict[tuple[str, tuple[int, ...]], tuple[list[int], list[RawChunk]]] = {}
    for seq, batch, _ in taken:
        for metric, chunk in batch:
            generation = tuple(id(d) for d in chunk.dictionaries.values())
            seqs, chunks = groups.setdefault((metric, generation), ([], []))
            if not seqs or seqs[-1] != seq:
                seqs.append(seq)
            chunks.append(chunk)
    # every batch's seq belongs to the coverage of every metric's rows: a batch is all or nothing
    every = sorted({seq for seq, _, _ in taken})
    return [(every, metric, RawChunk.concat(chunks)) for (metric, _), (_, chunks) in groups.items()]


# -- the command every replica applies -----------------------------------------------------


_RESYNC_WAIT_S = 5.0  # metrics.resync waits this long for the consumer to catch up
_RESYNC_WAIT_MAX_S = 30.0


def register_metrics_commands(registry: CommandRegistry, metrics: MetricsRuntime) -> None:
    """Register ``metrics.compact`` (retention and compaction of this replica's memory) and
    ``metrics.resync`` (catch up with the shared event stream)."""

    def compact(_args: dict[str, Any]) -> str:
        report = metrics.compact()
        tiers = {(t.metric, t.resolution): t for t in metrics.store.stats()}
        points = {
            res: sum(t.points for (_, r), t in tiers.items() if r == res)
            for res in ("raw", "1m", "1h")
        }
        return (
            f"dropped raw {report['raw']}, 1m {report['1m']}, 1h {report['1h']} points; pruned "
            f"{report['dictionary_values_pruned']} strings; persisted "
            f"{report.get('persisted_events', 0)} events; kept raw {points['raw']}, "
            f"1m {points['1m']}, 1h {points['1h']} points"
        )

    def resync(args: dict[str, Any]) -> str:
        """Catch up with the shared stream: restart the consumer if its thread is gone (from the
        last applied entry: what it has is kept, nothing is read twice), then wait, bounded, until
        it has read everything on the stream now. Not a rebuild from scratch: the store keeps its
        events, and entries trimmed from the stream meanwhile are not recovered."""
        consumer = metrics.consumer
        if consumer is None:
            return "no shared stream (no Redis): nothing to resync"
        if not metrics.started:
            return "metrics not started on this replica: nothing to resync"
        timeout = float(args.get("timeout_s", _RESYNC_WAIT_S))
        if not 0 < timeout <= _RESYNC_WAIT_MAX_S:
            raise ValueError(f"timeout_s: {timeout!r}; allowed: > 0, <= {_RESYNC_WAIT_MAX_S}")
        lag_before = consumer.lag_s
        restarted = not consumer.running
        if restarted:
            consumer.start()
        caught_up = metrics.sync(timeout)
        return (
            f"event stream {'caught up' if caught_up else 'NOT caught up'} at {consumer.last_id}"
            f" (consumer {'restarted' if restarted else 'running'}); lag {lag_before:.1f} s"
            f" -> {consumer.lag_s:.1f} s; {consumer.skipped_entries} entries skipped so far"
        )

    registry.register("metrics.compact", compact)
    registry.register("metrics.resync", resync)


# -- the process-wide default ----------------------------------------------------------------

_default: MetricsRuntime | None = None
_default_lock = threading.Lock()


def default_runtime() -> MetricsRuntime:
    """The runtime behind ``m1lib.metrics.record_event`` and friends, built on first use."""
    runtime = _default
    if runtime is not None:
        return runtime
    with _default_lock:
        if _default is None:
            _set_default(_build_default())
        assert _default is not None
        return _default


def _build_default() -> MetricsRuntime:
    """Outside a replica: forwarding when Redis or an API key says where to, else in memory."""
    from m1lib.settings import get_settings

    settings = get_settings()
    forwarding = settings.redis_url is not None or settings.api.key is not None
    built = MetricsRuntime(settings, forwarding=forwarding)
    built.start()
    if forwarding:
        atexit.register(built.close)  # flow runs end quickly: their last events still go out
        assert built.forwarder is not None
        logger.debug("events recorded in this process go to %s", built.forwarder.destination)
    else:
        logger.info(
            "events recorded in this process stay in it (no M1_REDIS_URL or M1_API_KEY to "
            "forward them to the replicas)"
        )
    return built


def query_json(query: Query) -> dict[str, Any]:
    """The query as the API's JSON body (aliases, only what differs from the defaults)."""
    return query.model_dump(mode="json", by_alias=True, exclude_defaults=True)


def _set_default(runtime: MetricsRuntime | None) -> None:
    global _default
    _default = runtime


def install_default(runtime: MetricsRuntime | None) -> MetricsRuntime | None:
    """Make ``runtime`` the process default (the API installs its own); returns the previous one.

    The previous one is not closed: its owner closes it. ``None`` resets to build-on-first-use.
    """
    with _default_lock:
        previous = _default
        _set_default(runtime)
    return previous
