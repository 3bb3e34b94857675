"""compact-timeseries: its tasks against a real database (SQLite and PostgreSQL) via ``.fn()``,
the flow body under Prefect (dry run and not) with its artifact, and its pure report."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from flows.compact_timeseries import (
    ARTIFACT_KEY,
    Compaction,
    CompactTimeseriesParams,
    compact_timeseries,
    compaction_report,
    storage_table,
)
from m1lib.control import acks_for
from m1lib.db import migrate
from m1lib.db.models import ControlCommand
from m1lib.db.session import Database
from m1lib.metrics import MetricsRuntime
from m1lib.settings import get_settings
from tasks.metrics import (
    apply_chunk_retention,
    compact_persisted_chunks,
    read_chunk_stats,
    request_replica_compaction,
)
from tests.flow_runs import FlowRun

HOUR_S = 3600.0


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database(
    request: pytest.FixtureRequest, task_settings: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Database]:
    """Tasks read settings from the environment, as a flow-run subprocess does."""
    monkeypatch.setenv("M1_RAW_RETENTION", "12h")
    if request.param == "postgres":
        monkeypatch.setenv("M1_DATABASE_URL", request.getfixturevalue("fresh_pg_url"))
    get_settings.cache_clear()
    with Database(get_settings()) as db:
        migrate.upgrade(db)
        yield db


def persist_events(db: Database, batches: int = 4) -> int:
    """Record events from 2 days to 3 hours ago in ``batches`` persisted batches; returns how many."""
    runtime = MetricsRuntime(get_settings(), db=db, replica_id="api-flow")
    runtime.start()
    now = time.time()
    rng = np.random.default_rng(0)
    total = 0
    for b in range(batches):
        stamps = now - rng.uniform(3 * HOUR_S, 48 * HOUR_S, 300)
        total += runtime.record_events(
            {"metric": "health_checks", "timestamp": float(t), "component": f"c{b % 2}",
             "status": "healthy", "latencyMs": float(t % 7)} for t in stamps
        )  # fmt: skip
        assert runtime.flush()
        runtime.persist()
    runtime.close()
    return total


def test_storage_table_sums_every_metric_per_resolution() -> None:
    stats = [
        {"metric": "a", "resolution": "raw", "chunks": 2, "points": 100, "bytes": 1500},
        {"metric": "b", "resolution": "raw", "chunks": 1, "points": 300, "bytes": 1500},
        {"metric": "a", "resolution": "1h", "chunks": 1, "points": 4, "bytes": 100},
    ]
    table = storage_table(stats)
    assert [row["resolution"] for row in table] == ["raw", "1m", "1h"]
    assert table[0] == {"resolution": "raw", "metrics": 2, "chunks": 3, "points": 400, "bytes": 3000,
                        "bytes_per_point": 7.5}  # fmt: skip
    assert table[1]["points"] == 0
    assert table[1]["bytes_per_point"] == 0.0


def test_retention_and_compaction_tasks(database: Database) -> None:
    events = persist_events(database)
    before = {s["resolution"]: s for s in read_chunk_stats.fn() if s["metric"] == "health_checks"}
    assert before["raw"]["points"] == events
    assert before["raw"]["chunks"] == 4
    preview = apply_chunk_retention.fn(True)
    assert {
        s["resolution"]: s for s in read_chunk_stats.fn() if s["metric"] == "health_checks"
    } == before
    done = apply_chunk_retention.fn(False)
    assert done == preview
    after = {s["resolution"]: s for s in read_chunk_stats.fn()}
    assert after["raw"]["points"] == before["raw"]["points"] - done["raw"]["points_dropped"]
    assert 0 < after["raw"]["points"] < events  # a fifth of the events are within 12 h
    assert done["1h"]["points_dropped"] == 0
    merged = compact_persisted_chunks.fn(5, 100, False)
    assert merged["1h"]["windows"] >= 1
    compacted = {s["resolution"]: s for s in read_chunk_stats.fn()}
    assert compacted["raw"]["points"] == after["raw"]["points"]
    assert compacted["1h"]["chunks"] < after["1h"]["chunks"]


def test_the_replica_command_is_issued_and_applied(database: Database) -> None:
    from m1lib.control import CommandRegistry, ReplicaAgent, ReplicaFigures
    from m1lib.metrics import register_metrics_commands

    runtime = MetricsRuntime(get_settings(), db=database, replica_id="api-cmd")
    registry = CommandRegistry()
    register_metrics_commands(registry, runtime)
    command_id = request_replica_compaction.fn()
    with database.transaction() as session:
        assert session.scalars(
            select(ControlCommand.name).where(ControlCommand.id == command_id)
        ).one() == ("metrics.compact")
    settings = get_settings().model_copy(
        update={"replica": get_settings().replica.model_copy(update={"id": "api-cmd"})}
    )
    agent = ReplicaAgent(settings, db=database, registry=registry, figures=ReplicaFigures)
    agent.apply_pending()
    (ack,) = acks_for(database, command_id)
    assert ack.ok, ack.detail
    assert "kept raw" in ack.detail


def test_the_flow_parameters_are_bounded() -> None:
    schema = CompactTimeseriesParams.model_json_schema()
    for name in ("compact_older_than_minutes", "max_windows"):
        assert "minimum" in schema["properties"][name]
        assert "maximum" in schema["properties"][name]
        assert schema["properties"][name]["description"]
    assert CompactTimeseriesParams().dry_run is False
    assert compact_timeseries.name == "compact-timeseries"


def test_dry_run_changes_nothing_and_reports_what_it_would_do(
    database: Database, run_flow: Callable[..., FlowRun]
) -> None:
    events = persist_events(database)
    before = read_chunk_stats.fn()
    run = run_flow(compact_timeseries, CompactTimeseriesParams(dry_run=True))
    assert read_chunk_stats.fn() == before
    result = run.result
    assert (result["dry_run"], result["command_id"]) == (True, None)
    assert 0 < result["retention"]["raw"]["points_dropped"] < events
    assert result["storage"][0]["points"] == events  # the storage as it is, unchanged
    assert run.table(ARTIFACT_KEY) == result["storage"]
    description = run.description(ARTIFACT_KEY)
    assert description.startswith("Persisted event chunks per resolution (dry run: unchanged)")
    assert "retention would drop" in description
    with database.transaction() as session:
        assert session.scalars(select(ControlCommand.id)).all() == []


def test_run_applies_retention_and_compaction_and_asks_replicas(
    database: Database, run_flow: Callable[..., FlowRun]
) -> None:
    events = persist_events(database)
    rehearsed = run_flow(compact_timeseries, CompactTimeseriesParams(dry_run=True)).result
    run = run_flow(compact_timeseries, CompactTimeseriesParams(compact_older_than_minutes=5))
    result = run.result
    assert result["dry_run"] is False
    assert result["retention"] == rehearsed["retention"]
    dropped = result["retention"]["raw"]["points_dropped"]
    assert result["storage"][0]["points"] == events - dropped
    assert {s["resolution"]: s["points"] for s in read_chunk_stats.fn()}["raw"] == events - dropped
    assert isinstance(result["command_id"], int)
    assert run.table(ARTIFACT_KEY) == result["storage"]
    assert run.description(ARTIFACT_KEY).endswith(
        f"replicas asked to compact (command {result['command_id']})."
    )
    quiet = run_flow(compact_timeseries, CompactTimeseriesParams(notify_replicas=False))
    assert quiet.result["command_id"] is None
    assert quiet.result["retention"]["raw"]["points_dropped"] == 0  # nothing left past retention


def test_report_sums_what_retention_and_compaction_did() -> None:
    retention = {
        "raw": {"chunks_deleted": 1, "chunks_trimmed": 1, "points_dropped": 40},
        "1h": {"chunks_deleted": 0, "chunks_trimmed": 0, "points_dropped": 2},
    }
    compaction = {"raw": {"windows": 3}, "1h": {"windows": 1}}
    stats = [{"metric": "a", "resolution": "raw", "chunks": 2, "points": 100, "bytes": 1500}]
    done = compaction_report(False, Compaction(retention, compaction, stats, command_id=7))
    assert done.artifact_key == ARTIFACT_KEY
    assert done.table == storage_table(stats)
    assert done.log == "retention dropped 42 points; 4 windows merged; command 7"
    assert done.description == (
        "Persisted event chunks per resolution: retention dropped 42 points, compaction merged "
        "4 windows, replicas asked to compact (command 7)."
    )
    assert done.result == {
        "dry_run": False,
        "retention": retention,
        "compaction": compaction,
        "command_id": 7,
        "storage": done.table,
    }
    dry = compaction_report(True, Compaction(retention, compaction, stats))
    assert dry.description.endswith("retention would drop 42 points, compaction merged 4 windows.")
    assert dry.result["command_id"] is None
