"""compact-timeseries: its tasks against a real database (SQLite and PostgreSQL), via ``.fn()``."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from flows.compact_timeseries import CompactTimeseriesParams, compact_timeseries
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
    storage_table,
)

HOUR_S = 3600.0


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database(
    request: pytest.FixtureRequest, tmp_data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Database]:
    """Tasks read settings from the environment, as a flow-run subprocess does."""
    monkeypatch.setenv("M1_DATA_DIR", str(tmp_data_dir))
    monkeypatch.setenv("M1_RAW_RETENTION", "12h")
    if request.param == "postgres":
        monkeypatch.setenv("M1_DATABASE_URL", request.getfixturevalue("fresh_pg_url"))
    get_settings.cache_clear()
    db = Database(get_settings())
    migrate.upgrade(db)
    yield db
    db.dispose()
    get_settings.cache_clear()


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
    table = storage_table.fn(stats)
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
