"""MetricsRuntime: the process default, the compaction command, figures; persistence in PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from sqlalchemy import func, select

import m1lib.metrics as metrics
from m1lib.control import CommandRegistry
from m1lib.db.models import MetricChunk
from m1lib.db.session import Database
from m1lib.errors import DatabaseUnavailable
from m1lib.metrics import persist
from m1lib.metrics.codec import decode_chunk
from m1lib.settings import Settings
from tests.m1lib.metrics.conftest import MakeRuntime
from tests.m1lib.metrics.factories import HOUR_US, as_records, make_events
from tests.m1lib.metrics.oracle import assert_matches, oracle

DECISION: dict[str, Any] = {"toolName": "web_search", "scope": "read", "allowed": False, "reason": "revoked",
                            "subject": "agent-1", "checkMs": 0.5}  # fmt: skip
QUERIES = [
    {"metric": "policy_decisions", "timeRange": "24h", "groupBy": ["toolName", "scope"],
     "filters": [{"field": "allowed", "op": "eq", "value": False}], "aggregations": ["count", "percentiles"]},
    {"metric": "policy_decisions", "timeRange": "3d", "interval": "1h", "groupBy": ["allowed"],
     "aggregations": ["count", "avg", "p95"]},
    {"metric": "policy_decisions", "timeRange": "12h", "groupBy": ["subject"], "aggregations": ["count", "max"]},
]  # fmt: skip


def now_us() -> int:
    return time.time_ns() // 1000


def recent_events(n: int, seed: int, *, days: float = 3.0) -> Any:
    end = now_us() - 1_000_000
    return make_events(
        "policy_decisions", n, seed=seed, start_us=end - int(days * 24 * HOUR_US), end_us=end
    )


def answers(runtime: metrics.MetricsRuntime) -> list[list[dict[str, Any]]]:
    return [runtime.run_query(q).rows for q in QUERIES]


def assert_same(a: list[list[dict[str, Any]]], b: list[list[dict[str, Any]]]) -> None:
    assert len(a) == len(b)
    for rows_a, rows_b in zip(a, b, strict=True):
        assert len(rows_a) == len(rows_b)
        for x, y in zip(rows_a, rows_b, strict=True):
            assert x == {
                k: pytest.approx(v, rel=1e-9) if isinstance(v, float) else v for k, v in y.items()
            }


def _us(moment: datetime) -> int:
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def assert_oracle(runtime: metrics.MetricsRuntime, frame: Any) -> None:
    for query in QUERIES:
        result = runtime.run_query(query)
        expected = oracle(frame, query, _us(result.meta.range_from), _us(result.meta.range_to))
        assert_matches(result.rows, expected, query, relative_error=metrics.RELATIVE_ERROR)


def raw_coverage(db: Database) -> persist.Coverage:
    with db.transaction() as session:
        payloads = session.scalars(
            select(MetricChunk.payload).where(MetricChunk.resolution == "raw")
        ).all()
    return persist.merge_coverage(*(decode_chunk(p).header["coverage"] for p in payloads))


def test_module_functions_use_the_installed_default(make_settings: Callable[..., Settings],
                                                    make_runtime: MakeRuntime) -> None:  # fmt: skip
    runtime = make_runtime(make_settings(), replica_id="default-test")
    previous = metrics.install_default(runtime)
    try:
        assert metrics.default_runtime() is runtime
        metrics.record_event("policy_decisions", **DECISION)
        assert metrics.record_events([{"metric": "policy_decisions", **DECISION}] * 4) == 4
        assert runtime.flush()
        result = metrics.run_query(
            {"metric": "policy_decisions", "timeRange": "1h", "groupBy": ["replica"]}
        )
        assert result.rows == [{"replica": "default-test", "count": 5}]
        assert result.meta.dropped_events == 0
    finally:
        metrics.install_default(previous)


def test_the_compact_command_reports_what_it_did(make_settings: Callable[..., Settings],
                                                 make_runtime: MakeRuntime) -> None:  # fmt: skip
    runtime = make_runtime(make_settings(), replica_id="compact-test")
    registry = CommandRegistry()
    metrics.register_metrics_commands(registry, runtime)
    runtime.record_events(as_records("policy_decisions", recent_events(500, 1)))
    assert runtime.flush()
    ok, detail = registry.apply("metrics.compact", {})
    assert ok, detail
    assert "dropped raw" in detail
    assert "kept raw" in detail
    assert registry.apply("metrics.compact", {})[0]  # idempotent


def test_figures_report_drops_and_lag(
    make_settings: Callable[..., Settings], make_runtime: MakeRuntime
) -> None:
    runtime = make_runtime(
        make_settings(events={"queue_size": 100}), replica_id="figures", start=False
    )
    for _ in range(150):
        runtime.record_event("policy_decisions", **DECISION)
    assert runtime.dropped_events == 50
    assert runtime.store_lag_s >= 0.0
    stats = runtime.stats()
    assert stats["droppedEvents"] == 50
    runtime.start()
    assert runtime.flush()
    assert runtime.store_lag_s == 0.0
    assert (
        runtime.run_query({"metric": "policy_decisions", "timeRange": "1h"}).meta.dropped_events
        == 50
    )


@pytest.mark.postgres
def test_a_restarted_replica_rebuilds_from_metric_chunks(make_settings: Callable[..., Settings],
                                                         make_runtime: MakeRuntime,
                                                         pg_database: Database) -> None:  # fmt: skip
    settings = make_settings(database={"url": pg_database.engine.url.render_as_string(False)},
                             events={"persist_s": 3600, "flush_ms": 5})  # fmt: skip
    frame = recent_events(4000, seed=2)
    first = make_runtime(settings, replica_id="api-1", db=pg_database)
    records = as_records("policy_decisions", frame)
    first.record_events(records[:2500])
    assert first.flush()
    assert first.persist() == 2500
    first.record_events(records[2500:])
    assert first.flush()
    before = answers(first)
    first.close()  # persists the rest
    with pg_database.transaction() as session:
        resolutions = dict(session.execute(select(MetricChunk.resolution, func.count())
                                           .group_by(MetricChunk.resolution)).all())  # fmt: skip
    assert resolutions == {"raw": 2, "1m": 2, "1h": 2}
    second = make_runtime(settings, replica_id="api-1", db=pg_database)
    assert second.loaded_chunks == 6
    assert_same(answers(second), before)
    frame = frame.assign(replica="api-1")
    assert_oracle(second, frame)


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


@pytest.mark.postgres
def test_a_database_outage_keeps_batches_for_the_next_attempt(make_settings: Callable[..., Settings],
                                                              make_runtime: MakeRuntime,
                                                              pg_database: Database) -> None:  # fmt: skip
    dead = Database(make_settings(database={"url": "postgresql://postgres@127.0.0.1:1/none",
                                            "connect_timeout_s": 1}))  # fmt: skip
    settings = make_settings(events={"persist_s": 3600})
    runtime = make_runtime(settings, replica_id="api-o", db=dead, start=False)
    runtime.recorder.start()
    runtime.record_events([{"metric": "policy_decisions", **DECISION}] * 10)
    assert runtime.flush()
    with pytest.raises(DatabaseUnavailable):
        runtime.persist()
    runtime.db = pg_database
    assert runtime.persist() == 10
    assert sum(s.points for s in persist.chunk_stats(pg_database) if s.resolution == "raw") == 10
    dead.dispose()


def test_a_database_down_at_start_costs_the_history_not_the_replica(
    make_settings: Callable[..., Settings], make_runtime: MakeRuntime
) -> None:
    dead = Database(
        make_settings(
            database={"url": "postgresql://postgres@127.0.0.1:1/none", "connect_timeout_s": 1}
        )
    )
    runtime = make_runtime(make_settings(), replica_id="api-down", db=dead)
    assert runtime.history_loaded is False
    runtime.record_event("policy_decisions", **DECISION)
    assert runtime.flush()
    assert runtime.run_query({"metric": "policy_decisions", "timeRange": "1h"}).rows == [
        {"count": 1}
    ]
    runtime.db = None  # nothing to persist at close
    dead.dispose()
