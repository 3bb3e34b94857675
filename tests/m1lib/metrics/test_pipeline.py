"""MetricsRuntime: the process default, the compaction command, figures; persistence in PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import func, select

import m1lib.metrics as metrics
from m1lib.control import CommandRegistry
from m1lib.db.models import MetricChunk
from m1lib.db.session import Database
from m1lib.errors import DatabaseUnavailable
from m1lib.metrics import persist
from m1lib.settings import Settings
from tests.m1lib.metrics.conftest import (
    QUERIES,
    MakeRuntime,
    _us,
    answers,
    assert_same,
    recent_events,
)
from tests.m1lib.metrics.factories import as_records
from tests.m1lib.metrics.oracle import assert_matches, oracle

DECISION: dict[str, Any] = {"toolName": "web_search", "scope": "read", "allowed": False, "reason": "revoked",
                            "subject": "agent-1", "checkMs": 0.5}  # fmt: skip


def assert_oracle(runtime: metrics.MetricsRuntime, frame: Any) -> None:
    for query in QUERIES:
        result = runtime.run_query(query)
        expected = oracle(frame, query, _us(result.meta.range_from), _us(result.meta.range_to))
        assert_matches(result.rows, expected, query, relative_error=metrics.RELATIVE_ERROR)


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
