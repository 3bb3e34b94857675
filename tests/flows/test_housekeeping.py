"""The housekeeping flow: its tasks (by ``.fn()``), its body under Prefect (dry run and not) with
its artifact, its parameters and its pure report. The SQL itself is tested on SQLite and
PostgreSQL in tests/m1lib/ops/test_housekeeping.py; here tasks read settings from the
environment, as a flow-run subprocess does, on SQLite."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlalchemy import select

from deployments.prefect_yaml import load_deployment_specs
from flows.housekeeping import ARTIFACT_KEY, HousekeepingParams, housekeeping, housekeeping_report
from m1lib.db.migrate import upgrade
from m1lib.db.models import ControlAck, ControlCommand, HealthStreak, Incident, Replica
from m1lib.db.session import Database
from m1lib.ops.housekeeping import HousekeepingSummary, TableResult
from m1lib.settings import get_settings
from tasks.housekeeping import housekeeping_cutoffs, preview_housekeeping, prune_housekeeping
from tasks.retry import is_transient
from tests.flow_runs import FlowRun

NOW = datetime(2026, 12, 3, 3, 30, tzinfo=UTC)
HERE = "api-flow"


@pytest.fixture
def database(task_settings: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Database]:
    """Two expired commands (3 acks), one live (1 ack); replicas gone, live and this one; an
    incident resolved 100 days ago, an open one; a streak idle 40 days, a fresh one."""
    monkeypatch.setenv("M1_REPLICA_ID", HERE)
    monkeypatch.setenv("M1_HOUSEKEEPING_REPLICA_GONE_AFTER", "2d")
    get_settings.cache_clear()
    now = datetime.now(UTC)
    with Database(get_settings()) as db:
        upgrade(db)
        with db.transaction() as session:
            for expires_at, acked_by in (
                (now - timedelta(days=2), ("a", "b")),
                (now - timedelta(minutes=1), ("a",)),
                (now + timedelta(hours=1), ("a",)),
            ):
                command = ControlCommand(
                    name="cache.evict", args={}, target=None, created_by="t",
                    created_at=expires_at - timedelta(hours=1), expires_at=expires_at,
                )  # fmt: skip
                session.add(command)
                session.flush()
                session.add_all(
                    ControlAck(command_id=command.id, replica_id=r, ok=True, applied_at=now)
                    for r in acked_by
                )
            for replica_id, age in (("gone", 3), ("live", 0), (HERE, 30)):
                seen = now - timedelta(days=age, seconds=5)
                session.add(
                    Replica(
                        id=replica_id, base_url="http://x", hostname="h", pid=1,
                        started_at=seen, last_seen=seen, cache_backend="memory", rss_bytes=0,
                    )
                )  # fmt: skip
            for resolved_at in (now - timedelta(days=100), None):
                session.add(
                    Incident(
                        component="redis", kind="down", trigger="t", runbook="r",
                        status="open" if resolved_at is None else "resolved",
                        started_at=now - timedelta(days=120), resolved_at=resolved_at,
                    )
                )  # fmt: skip
            for component, idle in (("redis", 40), ("database", 0)):
                session.add(
                    HealthStreak(
                        component=component, updated_at=now - timedelta(days=idle, seconds=5)
                    )
                )
        yield db


def left(db: Database) -> tuple[int, int, list[str]]:
    """Commands, acks and the replica ids still there."""
    with db.transaction() as session:
        commands = len(session.scalars(select(ControlCommand.id)).all())
        acks = len(session.scalars(select(ControlAck.command_id)).all())
        replicas = list(session.scalars(select(Replica.id).order_by(Replica.id)))
    return commands, acks, replicas


def healing_left(db: Database) -> tuple[list[bool], list[str]]:
    """Whether each incident still there is open; the components whose streak row is there."""
    with db.transaction() as session:
        opened = sorted(at is None for at in session.scalars(select(Incident.resolved_at)))
        streaks = sorted(session.scalars(select(HealthStreak.component)))
    return opened, streaks


def test_cutoffs_read_the_settings_of_the_environment(database: Database) -> None:
    cutoffs = housekeeping_cutoffs.fn(NOW)
    assert cutoffs.replicas_seen_before == NOW - timedelta(days=2)
    assert (cutoffs.commands_expired_before, cutoffs.current_replica) == (NOW, HERE)


def test_tasks_preview_then_prune(database: Database) -> None:
    cutoffs = housekeeping_cutoffs.fn()
    preview = preview_housekeeping.fn(cutoffs)
    assert (preview.rows_of("control_commands"), preview.rows_of("control_acks")) == (2, 3)
    assert left(database) == (3, 4, sorted([HERE, "gone", "live"]))
    summary = prune_housekeeping.fn(cutoffs, 1)
    assert summary.rows_of("replicas") == 1
    assert left(database) == (1, 1, sorted([HERE, "live"]))


def test_io_tasks_retry_only_transient_failures() -> None:
    for io_task in (preview_housekeeping, prune_housekeeping):
        assert (io_task.retries, io_task.retry_condition_fn) == (3, is_transient)
    assert housekeeping_cutoffs.retries == 0  # pure work: nothing a retry could change


def test_dry_run_counts_and_deletes_nothing(
    database: Database, run_flow: Callable[..., FlowRun]
) -> None:
    run = run_flow(housekeeping, HousekeepingParams(dry_run=True))
    assert run.result["dry_run"] is True
    assert run.result["tables"] == {
        "control_commands": 2, "control_acks": 3, "replicas": 1, "incidents": 1,
        "health_streaks": 1, "cache_ttl_observations": 0,
    }  # fmt: skip
    assert left(database) == (3, 4, sorted([HERE, "gone", "live"]))
    assert healing_left(database) == ([False, True], ["database", "redis"])
    assert run.table(ARTIFACT_KEY) == run.result["rows"]
    assert "(dry run: nothing deleted)" in run.description(ARTIFACT_KEY)


def test_run_prunes_and_its_artifact_lists_each_table(
    database: Database, run_flow: Callable[..., FlowRun]
) -> None:
    run = run_flow(housekeeping)
    assert (run.result["dry_run"], run.result["total"]) == (False, 8)
    assert left(database) == (1, 1, sorted([HERE, "live"]))
    assert healing_left(database) == ([True], ["database"])  # the open incident, the fresh streak
    table = {row["table"]: row for row in run.table(ARTIFACT_KEY)}
    assert list(table) == [
        "control_commands", "control_acks", "replicas", "incidents", "health_streaks",
        "cache_ttl_observations",
    ]  # fmt: skip
    assert table["control_acks"]["rule"] == "with its control_commands"
    assert table["replicas"]["rule"] == "M1_HOUSEKEEPING_REPLICA_GONE_AFTER"
    assert (table["incidents"]["rows"], table["incidents"]["rule"]) == (
        1, "M1_HOUSEKEEPING_INCIDENT_RETENTION"
    )  # fmt: skip
    assert (table["health_streaks"]["rows"], table["health_streaks"]["rule"]) == (
        1, "M1_HOUSEKEEPING_STREAK_RETENTION"
    )  # fmt: skip
    assert run.description(ARTIFACT_KEY) == (
        f"Pruned **8** rows of M1's tables at {run.result['now'][:19]}+00:00."
    )
    assert run_flow(housekeeping).result["total"] == 0


def test_report_says_what_went() -> None:
    summary = HousekeepingSummary(
        dry_run=False,
        now=NOW,
        tables=(
            TableResult("control_commands", 2, NOW, "expired"),
            TableResult("incidents", 0, NOW, "R"),
        ),
    )
    report = housekeeping_report(summary)
    assert report.artifact_key == ARTIFACT_KEY
    assert report.table == summary.rows()
    assert report.description == "Pruned **2** rows of M1's tables at 2026-12-03T03:30:00+00:00."
    assert report.log == "Pruned 2 rows of M1's tables at 2026-12-03T03:30:00+00:00"
    assert report.result["tables"] == {"control_commands": 2, "incidents": 0}
    assert "skipped" not in report.result


def test_dry_run_report_says_nothing_was_deleted() -> None:
    report = housekeeping_report(HousekeepingSummary(dry_run=True, now=NOW))
    assert report.description == (
        "Would prune **0** rows of M1's tables at 2026-12-03T03:30:00+00:00 "
        "(dry run: nothing deleted)."
    )
    assert (report.result["dry_run"], report.result["total"]) == (True, 0)


def test_parameters_are_bounded_and_described() -> None:
    assert (HousekeepingParams().dry_run, HousekeepingParams().batch_size) == (False, 500)
    for bad in (0, 5001):
        with pytest.raises(ValidationError):
            HousekeepingParams(batch_size=bad)
    assert all(field.description for field in HousekeepingParams.model_fields.values())
    assert housekeeping.name == "housekeeping"


def test_housekeeping_is_deployed_daily_one_at_a_time() -> None:
    spec = {s.name: s for s in load_deployment_specs()}["housekeeping"]
    assert spec.entrypoint == "flows.housekeeping.housekeeping"
    assert [(s.cron, s.timezone) for s in spec.schedules] == [("30 3 * * *", "UTC")]
    assert spec.concurrency_limit == 1
