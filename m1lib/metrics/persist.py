"""Closed chunks in the database (``metric_chunks``): writing, loading, retention and compaction.

Each replica writes only the events it recorded itself (raw, 1-minute and 1-hour rows of the same
batches, in one transaction), so the table holds every event once however many replicas share
them. A chunk's header says which of its replica's batches it holds (``coverage``: run id -> batch
sequence ranges); a restarting replica loads the chunks and then applies from the shared stream
only the batches no chunk covers, so nothing is counted twice.

Retention deletes what is past each resolution's retention, exactly (a chunk straddling the cut-off
is rewritten without its old part). Compaction merges the closed chunks of one window (raw and
1-minute: an hour; 1-hour: a day) per metric and replica into one, which removes per-chunk
overhead and, for rollups, merges equal rows; contents and coverage are unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

import numpy as np
from sqlalchemy import and_, delete, func, or_, select

from m1lib.db.models import MetricChunk
from m1lib.epoch import from_us, to_us
from m1lib.metrics.codec import (
    DecodedBlock,
    DecodedChunk,
    decode_block,
    decode_chunk,
    encode_block,
    encode_chunk,
)
from m1lib.metrics.columns import RawChunk, StringDictionary
from m1lib.metrics.rollup import RollupBlock, merge_blocks
from m1lib.metrics.schema import Kind, MetricSpec
from m1lib.metrics.sketch import codes_of
from m1lib.metrics.store import HOUR_US, RESOLUTIONS

if TYPE_CHECKING:
    from m1lib.db.session import Database
    from m1lib.settings import Settings

__all__ = [
    "ChunkStats",
    "Coverage",
    "apply_retention",
    "chunk_rows",
    "chunk_stats",
    "compact_chunks",
    "iter_chunks",
    "merge_coverage",
    "write_chunks",
]

logger = logging.getLogger("m1.metrics")

Coverage = dict[str, list[list[int]]]  # run id -> sorted, disjoint [first, last] batch sequences
WINDOWS: Final[Mapping[str, int]] = {"raw": HOUR_US, "1m": HOUR_US, "1h": 24 * HOUR_US}
_BATCH_ROWS = 64  # chunks fetched per round trip while streaming a load


def merge_coverage(*coverages: Mapping[str, Sequence[Sequence[int]]]) -> Coverage:
    """The union of coverages, as sorted disjoint ranges per run (adjacent ranges joined)."""
    out: Coverage = {}
    runs = {run for coverage in coverages for run in coverage}
    for run in sorted(runs):
        ranges = sorted(
            (int(a), int(b)) for coverage in coverages for a, b in coverage.get(run, ())
        )
        joined: list[list[int]] = []
        for first, last in ranges:
            if joined and first <= joined[-1][1] + 1:
                joined[-1][1] = max(joined[-1][1], last)
            else:
                joined.append([first, last])
        out[run] = joined
    return out


def covered(coverage: Mapping[str, Sequence[Sequence[int]]], run: str, seq: int) -> bool:
    return any(first <= seq <= last for first, last in coverage.get(run, ()))


# -- writing ---------------------------------------------------------------------------------


_LAST_US: Final = to_us(datetime.max.replace(tzinfo=UTC))  # 9999-12-31T23:59:59.999999Z


@dataclass(frozen=True)
class ChunkRow:
    """One ``metric_chunks`` row to write: the one place a chunk becomes a :class:`MetricChunk`."""

    metric: str
    resolution: str
    replica: str
    start_us: int
    end_us: int
    points: int
    payload: bytes

    def to_model(self, created_at: datetime) -> MetricChunk:
        return MetricChunk(
            metric=self.metric,
            resolution=self.resolution,
            replica=self.replica,
            start_ts=from_us(self.start_us),
            # exclusive, so it may be 10000-01-01, past what a datetime holds: then the last µs
            end_ts=from_us(min(self.end_us, _LAST_US)),
            points=self.points,
            bytes=len(self.payload),
            created_at=created_at,
            payload=self.payload,
        )


def _dictionary_values(chunk: RawChunk) -> dict[str, list[str]]:
    return {name: d.values for name, d in chunk.dictionaries.items()}


def chunk_rows(
    spec: MetricSpec, chunk: RawChunk, *, replica: str, coverage: Coverage
) -> list[ChunkRow]:
    """The raw, 1-minute and 1-hour rows of one sorted chunk of a replica's own events."""
    from m1lib.metrics.rollup import rollup_raw

    header = {"coverage": coverage, "replica": replica}
    rows = [
        ChunkRow(
            spec.name,
            "raw",
            replica,
            chunk.start_us,
            chunk.end_us,
            chunk.size,
            encode_chunk(spec, chunk, header),
        )
    ]
    values = _dictionary_values(chunk)
    for label, res in RESOLUTIONS.items():
        block = rollup_raw(chunk, spec, res)
        rows.append(
            ChunkRow(
                spec.name,
                label,
                replica,
                block.start_us,
                block.end_us,
                block.size,
                encode_block(spec, block, values, header),
            )
        )
    return rows


def write_chunks(db: Database, rows: Sequence[ChunkRow]) -> None:
    """Insert rows in one transaction: a batch is persisted at every resolution or at none."""
    now = datetime.now(UTC)
    with db.transaction() as session:
        session.add_all(row.to_model(now) for row in rows)


# -- loading ---------------------------------------------------------------------------------


def _cutoffs(settings: Settings, now: datetime) -> dict[str, datetime]:
    return {
        "raw": now - settings.raw.retention,
        "1m": now - settings.rollup.retention_1m,
        "1h": now - settings.rollup.retention_1h,
    }


def iter_chunks(
    db: Database, settings: Settings, *, now: datetime | None = None
) -> Iterator[DecodedChunk | DecodedBlock]:
    """Every chunk still within its resolution's retention, decoded, from one consistent read
    (one statement, so a compaction committing meanwhile cannot make a chunk appear twice)."""
    cutoffs = _cutoffs(settings, now or datetime.now(UTC))
    wanted = or_(
        *(
            and_(MetricChunk.resolution == label, MetricChunk.end_ts > cutoff)
            for label, cutoff in cutoffs.items()
        )
    )
    query = (
        select(MetricChunk.resolution, MetricChunk.payload).where(wanted).order_by(MetricChunk.id)
    )
    with db.transaction() as session:
        result = session.execute(query.execution_options(yield_per=_BATCH_ROWS))
        for resolution, payload in result:
            yield decode_chunk(payload) if resolution == "raw" else decode_block(payload)


# -- statistics ------------------------------------------------------------------------------


@dataclass
class ChunkStats:
    """Persisted points and bytes of one metric at one resolution."""

    metric: str
    resolution: str
    chunks: int = 0
    points: int = 0
    bytes: int = 0

    @property
    def bytes_per_point(self) -> float:
        return self.bytes / self.points if self.points else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "resolution": self.resolution,
            "chunks": self.chunks,
            "points": self.points,
            "bytes": self.bytes,
            "bytes_per_point": round(self.bytes_per_point, 2),
        }


def chunk_stats(db: Database) -> list[ChunkStats]:
    query = (
        select(
            MetricChunk.metric,
            MetricChunk.resolution,
            func.count(),
            func.sum(MetricChunk.points),
            func.sum(MetricChunk.bytes),
        )
        .group_by(MetricChunk.metric, MetricChunk.resolution)
        .order_by(MetricChunk.metric, MetricChunk.resolution)
    )
    with db.transaction() as session:
        rows = session.execute(query).all()
    return [ChunkStats(m, r, int(c), int(p or 0), int(b or 0)) for m, r, c, p, b in rows]


# -- retention and compaction ----------------------------------------------------------------


@dataclass
class _Loaded:
    """Decoded chunks of one metric, translated into one shared set of dictionaries."""

    spec: MetricSpec
    dictionaries: dict[str, StringDictionary] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.dictionaries = {
            f.name: StringDictionary() for f in self.spec.fields if f.kind is Kind.STR
        }

    def raw(self, decoded: DecodedChunk) -> RawChunk:
        columns = dict(decoded.columns)
        for name, dictionary in self.dictionaries.items():
            columns[name] = dictionary.remap(decoded.dictionaries[name])[columns[name]]
        codes = {name: codes_of(columns[name]) for name in self.spec.measures}
        return RawChunk(decoded.ts, columns, codes, self.dictionaries)

    def block(self, decoded: DecodedBlock) -> RollupBlock:
        dims = dict(decoded.block.dims)
        for name in self.spec.dimensions:
            if name in self.dictionaries:
                dims[name] = self.dictionaries[name].remap(decoded.dictionaries[name])[dims[name]]
        b = decoded.block
        return RollupBlock(b.resolution_us, b.bucket, dims, b.count, b.measures)

    def values(self) -> dict[str, list[str]]:
        return {name: d.values for name, d in self.dictionaries.items()}


def _encode(
    loaded: _Loaded, item: RawChunk | RollupBlock, header: Mapping[str, Any]
) -> tuple[bytes, int, int, int]:
    """(payload, start_us, end_us, points) of a chunk or block."""
    if isinstance(item, RawChunk):
        return encode_chunk(loaded.spec, item, header), item.start_us, item.end_us, item.size
    payload = encode_block(loaded.spec, item, loaded.values(), header)
    return payload, item.start_us, item.end_us, item.size


def _trimmed(row: MetricChunk, cutoff_us: int) -> tuple[MetricChunk | None, int]:
    """``row`` without what is older than the cut-off (None: nothing left); points dropped."""
    loaded: _Loaded
    if row.resolution == "raw":
        decoded = decode_chunk(row.payload)
        loaded = _Loaded(decoded.spec)
        chunk = loaded.raw(decoded)
        lo, _ = chunk.bounds(cutoff_us, np.iinfo(np.int64).max)
        if lo >= chunk.size:
            return None, chunk.size
        kept: RawChunk | RollupBlock = chunk.slice(lo, chunk.size, copy=True)
        header = decoded.header
    else:
        decoded_block = decode_block(row.payload)
        loaded = _Loaded(decoded_block.spec)
        block = loaded.block(decoded_block)
        start = cutoff_us - block.resolution_us + 1  # keep buckets that end after the cut-off
        lo, _ = block.bounds(start, np.iinfo(np.int64).max)
        if lo >= block.size:
            return None, block.size
        kept = block.slice(lo, block.size)
        header = decoded_block.header
    payload, start_us, end_us, points = _encode(loaded, kept, header)
    fresh = ChunkRow(row.metric, row.resolution, row.replica, start_us, end_us, points, payload)
    return fresh.to_model(row.created_at), int(row.points) - points


def apply_retention(
    db: Database, settings: Settings, *, now: datetime | None = None, dry_run: bool = False
) -> dict[str, dict[str, int]]:
    """Delete chunks past their resolution's retention and trim the ones straddling it.

    Returns per resolution the chunks deleted, chunks rewritten and points dropped.
    """
    cutoffs = _cutoffs(settings, now or datetime.now(UTC))
    report = {
        label: {"chunks_deleted": 0, "chunks_trimmed": 0, "points_dropped": 0} for label in cutoffs
    }
    with db.transaction() as session:
        for label, cutoff in cutoffs.items():
            gone = and_(MetricChunk.resolution == label, MetricChunk.end_ts <= cutoff)
            counted = session.execute(
                select(func.count(), func.sum(MetricChunk.points)).where(gone)
            ).one()
            report[label]["chunks_deleted"] = int(counted[0])
            report[label]["points_dropped"] = int(counted[1] or 0)
            straddling = session.scalars(
                select(MetricChunk).where(
                    MetricChunk.resolution == label,
                    MetricChunk.start_ts < cutoff,
                    MetricChunk.end_ts > cutoff,
                )
            ).all()
            for row in straddling:
                fresh, dropped = _trimmed(row, to_us(cutoff))
                report[label]["chunks_trimmed"] += 1
                report[label]["points_dropped"] += dropped
                if not dry_run:
                    session.delete(row)
                    if fresh is not None:
                        session.add(fresh)
            if not dry_run:
                session.execute(delete(MetricChunk).where(gone))
    return report


def compact_chunks(
    db: Database,
    *,
    older_than: timedelta,
    max_windows: int = 500,
    now: datetime | None = None,
    dry_run: bool = False,
) -> dict[str, dict[str, int]]:
    """Merge the closed chunks of each window into one per metric, resolution and replica.

    A window is closed when its newest chunk ended ``older_than`` ago. Returns per resolution the
    windows merged, chunks before and after, and bytes before and after.
    """
    closed_before = (now or datetime.now(UTC)) - older_than
    report = {
        label: {
            "windows": 0,
            "chunks_before": 0,
            "chunks_after": 0,
            "bytes_before": 0,
            "bytes_after": 0,
        }
        for label in WINDOWS
    }
    listing = select(
        MetricChunk.id,
        MetricChunk.metric,
        MetricChunk.resolution,
        MetricChunk.replica,
        MetricChunk.start_ts,
        MetricChunk.end_ts,
        MetricChunk.bytes,
    )
    with db.transaction() as session:
        rows = session.execute(listing.where(MetricChunk.end_ts <= closed_before)).all()
    windows: dict[tuple[str, str, str, int], list[Any]] = {}
    for row in rows:
        window = to_us(row.start_ts) // WINDOWS[row.resolution]
        windows.setdefault((row.metric, row.resolution, row.replica, window), []).append(row)
    merged_windows = 0
    for (_metric, resolution, _replica, _window), members in sorted(windows.items()):
        if len(members) < 2:
            continue
        if merged_windows >= max_windows:
            break
        merged_windows += 1
        stats = report[resolution]
        stats["windows"] += 1
        stats["chunks_before"] += len(members)
        stats["chunks_after"] += 1
        stats["bytes_before"] += sum(int(m.bytes) for m in members)
        stats["bytes_after"] += _merge_window(db, [int(m.id) for m in members], dry_run=dry_run)
    return report


def _merge_window(db: Database, ids: list[int], *, dry_run: bool) -> int:
    """Replace chunks ``ids`` (one metric, resolution, replica) by one; returns its bytes."""
    with db.transaction() as session:
        members = session.scalars(
            select(MetricChunk).where(MetricChunk.id.in_(ids)).order_by(MetricChunk.id)
        ).all()
        if len(members) < 2:
            return sum(int(m.bytes) for m in members)
        first = members[0]
        coverage: Coverage = {}
        if first.resolution == "raw":
            decoded = [decode_chunk(m.payload) for m in members]
            loaded = _Loaded(decoded[0].spec)
            item: RawChunk | RollupBlock = RawChunk.concat([loaded.raw(d) for d in decoded])
            coverage = merge_coverage(*(d.header.get("coverage", {}) for d in decoded))
        else:
            blocks = [decode_block(m.payload) for m in members]
            loaded = _Loaded(blocks[0].spec)
            item = merge_blocks([loaded.block(b) for b in blocks], loaded.spec)
            coverage = merge_coverage(*(b.header.get("coverage", {}) for b in blocks))
        header = {"coverage": coverage, "replica": first.replica}
        payload, start_us, end_us, points = _encode(loaded, item, header)
        if not dry_run:
            for member in members:
                session.delete(member)
            merged = ChunkRow(
                first.metric, first.resolution, first.replica, start_us, end_us, points, payload
            )
            session.add(merged.to_model(datetime.now(UTC)))
        return len(payload)
