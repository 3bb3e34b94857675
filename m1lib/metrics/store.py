"""The in-process event store: per metric, raw chunks and 1-minute and 1-hour rollups.

Writers (the ingest thread, the stream consumer, maintenance) are serialised by one lock and build
new immutable chunks and blocks; readers take a :class:`MetricSnapshot` (tuples of those objects)
under a second, briefly held lock, so a query never waits for a merge and never sees half a batch.

Chunks and blocks are kept like a binary counter: a new one merges with the previous while that is
at most twice its size (up to ``chunk_events``), so a day of small batches becomes a few large,
sorted arrays. Retention trims by time, exactly: raw events older than ``M1_RAW_RETENTION`` and
rollup buckets that ended before their resolution's retention are dropped.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Final, TypeVar

import numpy as np
from numpy.typing import NDArray

from m1lib.metrics.columns import DTYPES, RawChunk, StringDictionary
from m1lib.metrics.rollup import RollupBlock, merge_blocks, rollup_raw
from m1lib.metrics.schema import METRICS, Kind, MetricSpec
from m1lib.metrics.sketch import codes_of
from m1lib.metrics.slab import TimeSlab

if TYPE_CHECKING:
    from m1lib.settings import Settings

__all__ = ["RESOLUTIONS", "EventStore", "MetricSnapshot", "TierStats"]

MINUTE_US: Final = 60_000_000
HOUR_US: Final = 3_600_000_000
RESOLUTIONS: Final[Mapping[str, int]] = {"1m": MINUTE_US, "1h": HOUR_US}
_US = 1_000_000
_MAX_TS = np.iinfo(np.int64).max
_PRUNE_MIN_VALUES = 1024  # a string dictionary is rebuilt when it is at least this big ...
_PRUNE_RATIO = 2  # ... and holds this many times more values than live raw events use

T = TypeVar("T", bound=TimeSlab)


def _us(delta: timedelta) -> int:
    return (delta.days * 86400 + delta.seconds) * _US + delta.microseconds


@dataclass(frozen=True)
class MetricSnapshot:
    """What one query reads: immutable chunks and blocks, and what the retention makes available.

    ``sizes`` are the dictionary lengths when the snapshot was taken; every code in the snapshot
    is below them.
    """

    spec: MetricSpec
    dictionaries: Mapping[str, StringDictionary]
    sizes: Mapping[str, int]
    raw: tuple[RawChunk, ...]
    rollups: Mapping[int, tuple[RollupBlock, ...]]
    now_us: int
    raw_since_us: int
    rollup_since_us: Mapping[int, int]
    raw_retention: timedelta
    rollup_retention: Mapping[int, timedelta]


@dataclass
class TierStats:
    """Points (events or rollup rows) and bytes in memory of one metric's tier."""

    metric: str
    resolution: str
    points: int = 0
    bytes: int = 0
    chunks: int = 0

    @property
    def bytes_per_point(self) -> float:
        return self.bytes / self.points if self.points else 0.0


@dataclass
class _MetricState:
    spec: MetricSpec
    dictionaries: dict[str, StringDictionary]
    raw: list[RawChunk] = field(default_factory=list)
    rollups: dict[int, list[RollupBlock]] = field(default_factory=dict)


class EventStore:
    """Columnar, time-ordered events of every metric, with rollups and retention.

    Use one per process (``MetricsRuntime`` builds it); tests and benchmarks may build their own
    and pass ``clock`` to fix "now".

    >>> store = EventStore.from_settings(settings)
    >>> store.append("health_checks", [ts_us], {"component": ["db"], "status": ["healthy"],
    ...                                          "latencyMs": [1.5], "replica": ["r1"]})
    """

    def __init__(
        self,
        *,
        raw_retention: timedelta = timedelta(hours=24),
        retention_1m: timedelta = timedelta(days=7),
        retention_1h: timedelta = timedelta(days=90),
        chunk_events: int = 1 << 20,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.raw_retention = raw_retention
        self.rollup_retention = {MINUTE_US: retention_1m, HOUR_US: retention_1h}
        self.chunk_events = chunk_events
        self.clock = clock
        self._write_lock = threading.RLock()
        self._read_lock = threading.Lock()
        self._metrics = {
            name: _MetricState(
                spec,
                {f.name: StringDictionary() for f in spec.fields if f.kind is Kind.STR},
                rollups={res: [] for res in RESOLUTIONS.values()},
            )
            for name, spec in METRICS.items()
        }
        self.expired_events = 0  # arrived already older than every retention
        self._versions = dict.fromkeys(self._metrics, 0)
        self._watchers: dict[str, list[Callable[[], None]]] = {}

    # -- change notices: a reader that waits for one metric's new events (the stream's alerts)

    def version(self, metric: str) -> int:
        """A number that changes whenever raw events of ``metric`` are added (cheap to poll)."""
        return self._versions[metric]

    def watch(self, metric: str, notify: Callable[[], None]) -> Callable[[], None]:
        """Call ``notify`` (on the adding thread: keep it tiny, no I/O) after each addition of raw
        events of ``metric``; returns the function that stops it."""
        self._metrics[metric]  # raises KeyError for an unknown metric
        with self._read_lock:
            self._watchers.setdefault(metric, []).append(notify)

        def unwatch() -> None:
            with self._read_lock:
                watchers = self._watchers.get(metric, [])
                if notify in watchers:
                    watchers.remove(notify)

        return unwatch

    @classmethod
    def from_settings(
        cls, settings: Settings, *, clock: Callable[[], float] = time.time
    ) -> EventStore:
        return cls(
            raw_retention=settings.raw.retention,
            retention_1m=settings.rollup.retention_1m,
            retention_1h=settings.rollup.retention_1h,
            chunk_events=settings.events.chunk_events,
            clock=clock,
        )

    def now_us(self) -> int:
        return int(self.clock() * _US)

    def _cutoffs(self, now: int) -> tuple[int, dict[int, int]]:
        """Raw kept from the first; rollup buckets kept from the second (aligned starts)."""
        raw_since = now - _us(self.raw_retention)
        since = {}
        for res, retention in self.rollup_retention.items():
            cutoff = now - _us(retention)
            since[res] = cutoff - cutoff % res
        return raw_since, since

    # -- writing -------------------------------------------------------------------------

    def encode(
        self,
        metric: str,
        ts: Sequence[int] | NDArray[np.int64],
        columns: Mapping[str, Sequence[Any] | NDArray[Any] | str],
    ) -> RawChunk:
        """A sorted chunk of plain values (strings as text); adds new strings to the dictionaries.

        ``columns`` has every field of the metric, ``replica`` included; a string column may be
        one ``str`` that every event shares.
        """
        state = self._metrics[metric]
        arrays: dict[str, NDArray[Any]] = {}
        n = len(ts)
        with self._write_lock:
            for f in state.spec.fields:
                column = columns[f.name]
                if f.kind is Kind.STR:
                    dictionary = state.dictionaries[f.name]
                    if isinstance(column, str):
                        code = dictionary.encode([column])[0]
                        arrays[f.name] = np.full(n, code, dtype=np.int32)
                    else:
                        arrays[f.name] = dictionary.encode(column)  # type: ignore[arg-type]
                elif isinstance(column, np.ndarray):
                    arrays[f.name] = column.astype(DTYPES[f.kind], copy=False)
                else:
                    arrays[f.name] = np.array(column, dtype=DTYPES[f.kind])
            return self._chunk(metric, np.asarray(ts, dtype=np.int64), arrays)

    def import_coded(
        self,
        metric: str,
        ts: NDArray[np.int64],
        columns: Mapping[str, NDArray[Any]],
        dictionaries: Mapping[str, Sequence[str]],
    ) -> RawChunk:
        """A chunk of another store's codes (a stream batch, a persisted chunk) in ours."""
        state = self._metrics[metric]
        arrays: dict[str, NDArray[Any]] = {}
        with self._write_lock:
            for f in state.spec.fields:
                column = columns[f.name]
                if f.kind is Kind.STR:
                    table = state.dictionaries[f.name].remap(dictionaries[f.name])
                    arrays[f.name] = table[column]
                else:
                    arrays[f.name] = column.astype(DTYPES[f.kind], copy=False)
            return self._chunk(metric, ts.astype(np.int64, copy=False), arrays)

    def _chunk(
        self, metric: str, ts: NDArray[np.int64], arrays: dict[str, NDArray[Any]]
    ) -> RawChunk:
        state = self._metrics[metric]
        codes = {name: codes_of(arrays[name]) for name in state.spec.measures}
        return RawChunk(ts, arrays, codes, dict(state.dictionaries)).sorted()

    def append(
        self,
        metric: str,
        ts: Sequence[int] | NDArray[np.int64],
        columns: Mapping[str, Sequence[Any] | NDArray[Any]],
    ) -> RawChunk:
        """Encode and insert events given as plain values (the bulk path); returns the chunk."""
        chunk = self.encode(metric, ts, columns)
        self.insert(metric, chunk)
        return chunk

    def insert(
        self, metric: str, chunk: RawChunk, *, raw: bool = True, rollups: bool = True
    ) -> None:
        """Add a sorted chunk of this store's codes: its raw events and/or their rollups.

        Persisted history arrives as raw and rollup chunks separately, so it passes one flag off.
        Events older than a tier's retention skip that tier.
        """
        if chunk.size == 0:
            return
        state = self._metrics[metric]
        with self._write_lock:
            raw_since, since = self._cutoffs(self.now_us())
            kept_anywhere = False
            if raw and chunk.end_us > raw_since:
                kept_anywhere = True
                self._push_raw(state, _since(chunk, raw_since, copy=True))
            if rollups:
                for res, start in since.items():
                    if chunk.end_us <= start:
                        continue
                    kept_anywhere = True
                    part = _since(chunk, start, copy=False)
                    self._push_block(state, res, rollup_raw(part, state.spec, res))
            if not kept_anywhere:
                self.expired_events += chunk.size

    def insert_block(self, metric: str, block: RollupBlock) -> None:
        """Add rollup rows already in this store's codes (persisted history)."""
        if block.size == 0:
            return
        state = self._metrics[metric]
        with self._write_lock:
            _, since = self._cutoffs(self.now_us())
            start = since[block.resolution_us]
            if block.end_us <= start:
                return
            self._push_block(state, block.resolution_us, _since(block, start, copy=True))

    def import_block(
        self, metric: str, block: RollupBlock, dictionaries: Mapping[str, Sequence[str]]
    ) -> RollupBlock:
        """Translate a block's string dimension codes from another store's dictionaries to ours."""
        state = self._metrics[metric]
        with self._write_lock:
            dims = dict(block.dims)
            for name in state.spec.dimensions:
                if state.spec.by_name[name].kind is Kind.STR:
                    dims[name] = state.dictionaries[name].remap(dictionaries[name])[
                        block.dims[name]
                    ]
        return RollupBlock(block.resolution_us, block.bucket, dims, block.count, block.measures)

    def _push_raw(self, state: _MetricState, chunk: RawChunk) -> None:
        merged = _binary_counter(state.raw, chunk, RawChunk.concat, self.chunk_events)
        name = state.spec.name
        with self._read_lock:
            state.raw = merged
            self._versions[name] += 1
            watchers = tuple(self._watchers.get(name, ()))
        for notify in watchers:
            notify()

    def _push_block(self, state: _MetricState, res: int, block: RollupBlock) -> None:
        spec = state.spec

        def merge(blocks: Sequence[RollupBlock]) -> RollupBlock:
            return merge_blocks(blocks, spec)

        merged = _binary_counter(state.rollups[res], block, merge, self.chunk_events)
        with self._read_lock:
            state.rollups[res] = merged

    # -- reading -------------------------------------------------------------------------

    def snapshot(self, metric: str) -> MetricSnapshot:
        state = self._metrics[metric]
        now = self.now_us()
        raw_since, since = self._cutoffs(now)
        with self._read_lock:
            dictionaries = dict(state.dictionaries)
            raw = tuple(state.raw)
            rollups = {res: tuple(blocks) for res, blocks in state.rollups.items()}
        sizes = {name: len(d) for name, d in dictionaries.items()}
        return MetricSnapshot(
            spec=state.spec,
            dictionaries=dictionaries,
            sizes=sizes,
            raw=raw,
            rollups=rollups,
            now_us=now,
            raw_since_us=raw_since,
            rollup_since_us=since,
            raw_retention=self.raw_retention,
            rollup_retention=dict(self.rollup_retention),
        )

    def stats(self) -> list[TierStats]:
        """Points and bytes in memory per metric and tier (raw, 1m, 1h)."""
        out = []
        for name, state in self._metrics.items():
            with self._read_lock:
                raw = tuple(state.raw)
                rollups = {res: tuple(blocks) for res, blocks in state.rollups.items()}
                dictionaries = dict(state.dictionaries)
            tier = TierStats(name, "raw", chunks=len(raw))
            tier.points = sum(c.size for c in raw)
            tier.bytes = sum(c.nbytes for c in raw)
            for fname, dictionary in dictionaries.items():
                if not state.spec.by_name[fname].dimension:
                    tier.bytes += _dictionary_bytes(dictionary)
            out.append(tier)
            for label, res in RESOLUTIONS.items():
                blocks = rollups[res]
                rollup = TierStats(name, label, chunks=len(blocks))
                rollup.points = sum(b.size for b in blocks)
                rollup.bytes = sum(b.nbytes for b in blocks)
                out.append(rollup)
        return out

    # -- maintenance ---------------------------------------------------------------------

    def apply_retention(self) -> dict[str, int]:
        """Drop raw events and rollup rows past their retention; returns points dropped per tier."""
        dropped = {"raw": 0, **dict.fromkeys(RESOLUTIONS, 0)}
        labels = {res: label for label, res in RESOLUTIONS.items()}
        with self._write_lock:
            raw_since, since = self._cutoffs(self.now_us())
            for state in self._metrics.values():
                kept_raw, dropped_raw = _trim(state.raw, raw_since)
                dropped["raw"] += dropped_raw
                kept_rollups = {}
                for res, blocks in state.rollups.items():
                    kept_rollups[res], dropped_rows = _trim(blocks, since[res])
                    dropped[labels[res]] += dropped_rows
                with self._read_lock:
                    state.raw = kept_raw
                    state.rollups = kept_rollups
        return dropped

    def compact(self) -> dict[str, int]:
        """Retention, then merge every tier's small chunks and prune unused dictionary values.

        Returns the points dropped per tier and the dictionary values pruned. Idempotent.
        """
        report = self.apply_retention()
        pruned = 0
        with self._write_lock:
            for state in self._metrics.values():
                raw = _merge_all(state.raw, RawChunk.concat, self.chunk_events)
                rollups = {}
                for res, blocks in state.rollups.items():
                    spec = state.spec

                    def merge(items: Sequence[RollupBlock], spec: MetricSpec = spec) -> RollupBlock:
                        return merge_blocks(items, spec)

                    rollups[res] = _merge_all(blocks, merge, self.chunk_events)
                raw, dictionaries, count = _prune_dictionaries(state, raw)
                pruned += count
                with self._read_lock:
                    state.raw = raw
                    state.rollups = rollups
                    state.dictionaries = dictionaries
        report["dictionary_values_pruned"] = pruned
        return report


def _since(slab: T, start_us: int, *, copy: bool) -> T:
    """What of ``slab`` is at or after ``start_us`` (the slab itself when all of it is)."""
    lo, _ = slab.bounds(start_us, _MAX_TS)
    return slab if lo == 0 else slab.slice(lo, slab.size, copy=copy)


def _trim(slabs: list[T], start_us: int) -> tuple[list[T], int]:
    """``slabs`` without what is before ``start_us`` (copied, so it is freed); points dropped."""
    kept = []
    dropped = 0
    for slab in slabs:
        lo, _ = slab.bounds(start_us, _MAX_TS)
        dropped += lo
        if lo == 0:
            kept.append(slab)
        elif lo < slab.size:
            kept.append(slab.slice(lo, slab.size, copy=True))
    return kept, dropped


def _binary_counter(
    items: list[T], item: T, merge: Callable[[Sequence[T]], T], cap: int
) -> list[T]:
    """``items`` plus ``item``, merging the tail while the newer part is at least half the older."""
    out = list(items)
    out.append(item)
    while len(out) >= 2:
        older, newer = out[-2].size, out[-1].size
        if newer * 2 < older or older + newer > cap:
            break
        out[-2:] = [merge(out[-2:])]
    return out


def _merge_all(items: list[T], merge: Callable[[Sequence[T]], T], cap: int) -> list[T]:
    """Merge consecutive items into as few as fit under ``cap`` each."""
    out: list[T] = []
    run: list[T] = []
    total: int = 0
    for item in items:
        if run and total + item.size > cap:
            out.append(merge(run))
            run, total = [], 0
        run.append(item)
        total += item.size
    if run:
        out.append(merge(run))
    return out


def _dictionary_bytes(dictionary: StringDictionary) -> int:
    values = dictionary.values
    # the strings, plus a list slot and a dict entry (key pointer, value, hash) per value
    return sum(sys.getsizeof(v) for v in values) + len(values) * (8 + 3 * 8 + 28)


def _prune_dictionaries(
    state: _MetricState, raw: list[RawChunk]
) -> tuple[list[RawChunk], dict[str, StringDictionary], int]:
    """Rebuild non-dimension string dictionaries that mostly hold values no raw event uses.

    Dimension dictionaries stay: rollups (kept far longer) refer to them, and they are small.
    """
    dictionaries = dict(state.dictionaries)
    pruned = 0
    for name, dictionary in state.dictionaries.items():
        if state.spec.by_name[name].dimension or len(dictionary) < _PRUNE_MIN_VALUES:
            continue
        used = np.zeros(len(dictionary) + 1, dtype=np.bool_)
        for chunk in raw:
            used[chunk.columns[name]] = True
        live = np.flatnonzero(used[:-1])
        if live.size * _PRUNE_RATIO > len(dictionary):
            continue
        fresh = StringDictionary(dictionary.values[int(i)] for i in live)
        table = np.full(len(dictionary) + 1, -1, dtype=np.int32)
        table[live] = np.arange(live.size, dtype=np.int32)
        dictionaries[name] = fresh
        raw = [
            RawChunk(c.ts, {**c.columns, name: table[c.columns[name]]}, c.codes, dictionaries)
            for c in raw
        ]
        pruned += len(dictionary) - live.size
    return raw, dictionaries, pruned
