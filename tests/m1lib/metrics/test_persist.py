"""Chunks in the database: rows per resolution, reading back, coverage, retention and compaction.

The direct tests write chunks built from a store on SQLite; the PostgreSQL ones persist through a
runtime, as a replica does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from sqlalchemy import select

from m1lib.db import migrate
from m1lib.db.models import MetricChunk
from m1lib.db.session import Database
from m1lib.metrics import persist
from m1lib.metrics.codec import DecodedBlock, DecodedChunk, decode_chunk
from m1lib.metrics.columns import RawChunk
from m1lib.metrics.schema import METRICS, TIMESTAMP_LIMIT_S
from m1lib.metrics.store import EventStore
from m1lib.settings import Settings
from tests.m1lib.metrics.conftest import MakeRuntime, answers, assert_same, recent_events
from tests.m1lib.metrics.factories import HOUR_US, MINUTE_US, NOW_S, NOW_US, as_records, make_events

SPEC = METRICS["health_checks"]
NOW = datetime.fromtimestamp(NOW_S, UTC)


def raw_coverage(db: Database) -> persist.Coverage:
    with db.transaction() as session:
        payloads = session.scalars(
            select(MetricChunk.payload).where(MetricChunk.resolution == "raw")
        ).all()
    return persist.merge_coverage(*(decode_chunk(p).header["coverage"] for p in payloads))


@pytest.mark.postgres
def test_persisted_chunks_keep_exactly_their_retention(make_settings: Callable[..., Settings],
                                                       make_runtime: MakeRuntime,
                                                       pg_database: Database) -> None:  # fmt: skip
    settings = make_settings(database={"url": pg_database.engine.url.render_as_string(False)},
                             raw={"retention": "6h"}, rollup={"retention_1m": "1d", "retention_1h": "2d"},
                             events={"persist_s": 3600})  # fmt: skip
    frame = recent_events(3000, seed=4, days=2.5)
    runtime = make_runtime(settings, replica_id="api-r", db=pg_database)
    for part in np.array_split(
        np.arange(len(frame)), 5
    ):  # five persisted batches: five chunks each
        runtime.record_events(as_records("policy_decisions", frame.iloc[part]))
        assert runtime.flush()
        runtime.persist()
    now = datetime.now(UTC)
    preview = persist.apply_retention(pg_database, settings, now=now, dry_run=True)
    report = persist.apply_retention(pg_database, settings, now=now)
    assert preview == report
    ts = frame.ts.to_numpy()
    now_at = int(now.timestamp() * 1e6)
    stats = {s.resolution: s for s in persist.chunk_stats(pg_database)}
    assert stats["raw"].points == int((ts >= now_at - 6 * HOUR_US).sum())
    assert report["raw"]["points_dropped"] == len(ts) - stats["raw"].points
    for label, res, keep in (("1m", 60_000_000, 24 * HOUR_US), ("1h", HOUR_US, 48 * HOUR_US)):
        cutoff = now_at - keep
        events_kept = 0
        for item in persist.iter_chunks(pg_database, settings, now=now):
            if getattr(item, "block", None) is not None and item.block.resolution_us == res:  # type: ignore[union-attr]
                assert item.block.start_us + res > cutoff  # type: ignore[union-attr]
                events_kept += int(item.block.count.sum())  # type: ignore[union-attr]
        assert events_kept == int((ts - ts % res + res > cutoff).sum()), label
    assert persist.apply_retention(pg_database, settings, now=now)["raw"]["points_dropped"] == 0


@pytest.mark.postgres
def test_compaction_merges_closed_chunks_and_keeps_answers(make_settings: Callable[..., Settings],
                                                           make_runtime: MakeRuntime,
                                                           pg_database: Database) -> None:  # fmt: skip
    settings = make_settings(database={"url": pg_database.engine.url.render_as_string(False)},
                             events={"persist_s": 3600})  # fmt: skip
    frame = recent_events(3000, seed=6, days=0.5)
    runtime = make_runtime(settings, replica_id="api-c", db=pg_database)
    for part in np.array_split(np.arange(len(frame)), 6):
        runtime.record_events(as_records("policy_decisions", frame.iloc[part]))
        assert runtime.flush()
        runtime.persist()
    before = answers(runtime)
    runtime.close()
    count_before = sum(s.chunks for s in persist.chunk_stats(pg_database))
    coverage_before = raw_coverage(pg_database)
    dry = persist.compact_chunks(pg_database, older_than=timedelta(0), dry_run=True)
    assert sum(s.chunks for s in persist.chunk_stats(pg_database)) == count_before
    report = persist.compact_chunks(pg_database, older_than=timedelta(0))
    assert {k: v["windows"] for k, v in report.items()} == {k: v["windows"] for k, v in dry.items()}
    stats = {s.resolution: s for s in persist.chunk_stats(pg_database)}
    assert sum(s.chunks for s in stats.values()) < count_before
    assert stats["raw"].points == 3000
    assert raw_coverage(pg_database) == coverage_before
    assert list(coverage_before) == [runtime.run_id]
    again = make_runtime(settings, replica_id="api-c", db=pg_database)
    assert_same(answers(again), before)
    assert persist.compact_chunks(pg_database, older_than=timedelta(0))["raw"]["windows"] == 0


@pytest.fixture
def sqlite_db(make_settings: Callable[..., Settings]) -> Iterator[Database]:
    db = Database(make_settings())
    migrate.upgrade(db)
    yield db
    db.dispose()


def chunk_of(n: int, start_us: int, end_us: int, *, seed: int = 0) -> RawChunk:
    """One sorted chunk of ``n`` health checks in ``[start_us, end_us)``, as a store builds it."""
    store = EventStore(
        clock=lambda: NOW_S,
        raw_retention=timedelta(days=30),
        retention_1m=timedelta(days=30),
        retention_1h=timedelta(days=30),
    )
    frame = make_events("health_checks", n, seed=seed, start_us=start_us, end_us=end_us)
    store.append(
        "health_checks",
        frame.ts.to_numpy(),
        {name: frame[name].tolist() for name in SPEC.field_names()},
    )
    return RawChunk.concat(store.snapshot("health_checks").raw)


def write(
    db: Database,
    chunk: RawChunk,
    *,
    replica: str = "r1",
    run: str = "run-a",
    seqs: tuple[int, int] = (1, 1),
) -> list[persist.ChunkRow]:
    rows = persist.chunk_rows(SPEC, chunk, replica=replica, coverage={run: [list(seqs)]})
    persist.write_chunks(db, rows)
    return rows


def stats_of(db: Database) -> dict[str, persist.ChunkStats]:
    return {s.resolution: s for s in persist.chunk_stats(db)}


def test_merge_coverage_joins_overlapping_and_adjacent_ranges_per_run() -> None:
    assert persist.merge_coverage() == {}
    merged = persist.merge_coverage(
        {"a": [[10, 12], [1, 3]]}, {"a": [[4, 6]], "b": [[5, 5]]}, {"a": [[2, 2], [11, 20]]}
    )
    assert merged == {"a": [[1, 6], [10, 20]], "b": [[5, 5]]}
    assert persist.merge_coverage({"a": [[1, 10]]}, {"a": [[3, 4]]}) == {"a": [[1, 10]]}
    assert persist.merge_coverage({"a": [[1, 2]]}, {"a": [[4, 5]]}) == {"a": [[1, 2], [4, 5]]}
    assert persist.merge_coverage(merged, merged) == merged  # idempotent
    assert persist.covered(merged, "a", 6)
    assert not persist.covered(merged, "a", 7)
    assert not persist.covered(merged, "c", 1)


def test_a_chunk_is_written_at_every_resolution_and_read_back(
    sqlite_db: Database, make_settings: Callable[..., Settings]
) -> None:
    chunk = chunk_of(500, NOW_US - 3 * HOUR_US, NOW_US)
    rows = write(sqlite_db, chunk, seqs=(4, 9))
    assert [r.resolution for r in rows] == ["raw", "1m", "1h"]
    assert rows[0].points == chunk.size == 500
    assert (rows[0].start_us, rows[0].end_us) == (chunk.start_us, chunk.end_us)
    stats = stats_of(sqlite_db)
    assert {label: s.chunks for label, s in stats.items()} == {"raw": 1, "1m": 1, "1h": 1}
    assert stats["raw"].points == 500
    assert stats["raw"].bytes == len(rows[0].payload)
    assert stats["raw"].to_dict()["bytes_per_point"] == round(len(rows[0].payload) / 500, 2)
    settings = make_settings(raw={"retention": "1d"})
    items = list(persist.iter_chunks(sqlite_db, settings, now=NOW))
    raw = [i for i in items if isinstance(i, DecodedChunk)]
    blocks = {i.block.resolution_us: i for i in items if isinstance(i, DecodedBlock)}
    assert len(raw) == 1
    assert np.array_equal(raw[0].ts, chunk.ts)
    assert raw[0].header["coverage"] == {"run-a": [[4, 9]]}
    assert raw[0].header["replica"] == "r1"
    assert set(blocks) == {MINUTE_US, HOUR_US}
    for block in blocks.values():
        assert int(block.block.count.sum()) == 500
        assert block.header["coverage"] == {"run-a": [[4, 9]]}


def test_reading_skips_chunks_past_their_retention(
    sqlite_db: Database, make_settings: Callable[..., Settings]
) -> None:
    write(sqlite_db, chunk_of(100, NOW_US - 5 * HOUR_US, NOW_US - 4 * HOUR_US))
    settings = make_settings(
        raw={"retention": "2h"}, rollup={"retention_1m": "1d", "retention_1h": "2d"}
    )
    items = list(persist.iter_chunks(sqlite_db, settings, now=NOW))
    assert [type(i).__name__ for i in items] == ["DecodedBlock", "DecodedBlock"]


def test_retention_trims_a_straddling_chunk_and_drops_an_old_one(
    sqlite_db: Database, make_settings: Callable[..., Settings]
) -> None:
    old = chunk_of(200, NOW_US - 10 * HOUR_US, NOW_US - 9 * HOUR_US, seed=1)
    straddling = chunk_of(400, NOW_US - 4 * HOUR_US, NOW_US, seed=2)
    write(sqlite_db, old, run="run-old")
    write(sqlite_db, straddling, run="run-new", seqs=(2, 3))
    settings = make_settings(
        raw={"retention": "2h"}, rollup={"retention_1m": "1d", "retention_1h": "2d"}
    )
    before = stats_of(sqlite_db)
    preview = persist.apply_retention(sqlite_db, settings, now=NOW, dry_run=True)
    assert stats_of(sqlite_db) == before  # a dry run changes nothing
    report = persist.apply_retention(sqlite_db, settings, now=NOW)
    assert report == preview
    kept = int((straddling.ts >= NOW_US - 2 * HOUR_US).sum())
    assert report["raw"] == {"chunks_deleted": 1, "chunks_trimmed": 1, "points_dropped": 600 - kept}
    assert report["1m"]["points_dropped"] == report["1h"]["points_dropped"] == 0
    stats = stats_of(sqlite_db)
    assert (stats["raw"].chunks, stats["raw"].points) == (1, kept)
    (raw,) = [
        i for i in persist.iter_chunks(sqlite_db, settings, now=NOW) if isinstance(i, DecodedChunk)
    ]
    assert raw.ts.min() >= NOW_US - 2 * HOUR_US
    assert np.array_equal(raw.ts, straddling.ts[straddling.ts >= NOW_US - 2 * HOUR_US])
    assert raw.header["coverage"] == {"run-new": [[2, 3]]}  # a trimmed chunk keeps its header
    assert persist.apply_retention(sqlite_db, settings, now=NOW)["raw"]["points_dropped"] == 0


def test_compaction_merges_the_chunks_of_one_window_per_replica(sqlite_db: Database) -> None:
    hour = NOW_US - NOW_US % HOUR_US - 3 * HOUR_US
    parts = [
        chunk_of(100, hour + i * 10 * MINUTE_US, hour + (i + 1) * 10 * MINUTE_US, seed=i)
        for i in range(3)
    ]
    for seq, part in enumerate(parts, start=1):
        write(sqlite_db, part, run="run-a", seqs=(seq, seq))
    write(sqlite_db, chunk_of(50, hour, hour + MINUTE_US, seed=9), replica="r2", run="run-b")
    before = stats_of(sqlite_db)
    assert before["raw"].chunks == 4
    later = NOW + timedelta(hours=1)
    assert (
        persist.compact_chunks(sqlite_db, older_than=timedelta(0), now=later, max_windows=0)["raw"][
            "windows"
        ]
        == 0
    )
    dry = persist.compact_chunks(sqlite_db, older_than=timedelta(0), now=later, dry_run=True)
    assert stats_of(sqlite_db) == before
    report = persist.compact_chunks(sqlite_db, older_than=timedelta(0), now=later)
    assert report == dry
    assert report["raw"]["windows"] == 1  # r2's lone chunk is left alone
    assert (report["raw"]["chunks_before"], report["raw"]["chunks_after"]) == (3, 1)
    after = stats_of(sqlite_db)
    assert after["raw"].chunks == 2
    assert after["raw"].points == before["raw"].points == 350
    with sqlite_db.transaction() as session:
        payloads = session.scalars(
            select(MetricChunk.payload).where(
                MetricChunk.resolution == "raw", MetricChunk.replica == "r1"
            )
        ).all()
    (merged,) = [decode_chunk(p) for p in payloads]
    assert merged.header["coverage"] == {"run-a": [[1, 3]]}
    assert np.array_equal(merged.ts, np.sort(np.concatenate([p.ts for p in parts])))
    assert (
        persist.compact_chunks(sqlite_db, older_than=timedelta(0), now=later)["raw"]["windows"] == 0
    )


def test_compaction_leaves_windows_that_are_not_closed(sqlite_db: Database) -> None:
    for i in range(2):
        write(sqlite_db, chunk_of(20, NOW_US - HOUR_US + i, NOW_US, seed=i))
    report = persist.compact_chunks(sqlite_db, older_than=timedelta(hours=2), now=NOW)
    assert all(r["windows"] == 0 for r in report.values())
    assert stats_of(sqlite_db)["raw"].chunks == 2


def test_events_in_the_last_hour_of_year_9999_are_persisted_and_read_back(
    sqlite_db: Database, make_settings: Callable[..., Settings]
) -> None:
    """A chunk's end (one microsecond past its last event) and an hour block's end may be
    10000-01-01, which no datetime holds: the row's end is the last representable microsecond."""
    limit_us = TIMESTAMP_LIMIT_S * 1_000_000
    chunk = chunk_of(50, limit_us - HOUR_US, limit_us - 1)
    last = chunk_of(1, limit_us - 1, limit_us)  # the very last microsecond M1 takes
    merged = RawChunk.concat([chunk, last])
    rows = write(sqlite_db, merged)
    assert rows[0].end_us == limit_us
    assert stats_of(sqlite_db)["raw"].points == 51
    with sqlite_db.transaction() as session:
        ends = session.scalars(select(MetricChunk.end_ts)).all()
    assert max(end.replace(tzinfo=UTC) for end in ends) == datetime.max.replace(tzinfo=UTC)
    settings = make_settings(raw={"retention": "1d"})
    far = datetime(9999, 12, 31, 23, 59, tzinfo=UTC)
    raw = [
        i for i in persist.iter_chunks(sqlite_db, settings, now=far) if isinstance(i, DecodedChunk)
    ]
    assert np.array_equal(raw[0].ts, merged.ts)
