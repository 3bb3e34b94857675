"""Housekeeping's SQL on SQLite and PostgreSQL: what it counts, what it deletes, what it keeps."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlalchemy import delete, select

from m1lib.db.migrate import upgrade
from m1lib.db.models import (
    CacheTtlObservation,
    ControlAck,
    ControlCommand,
    HealthStreak,
    Incident,
    Replica,
)
from m1lib.db.session import Database
from m1lib.errors import InputError
from m1lib.ops import housekeeping, incidents
from m1lib.ops.cost.observe import Observation, publish
from m1lib.ops.housekeeping import Cutoffs, HousekeepingSummary
from m1lib.settings import Settings
from tests.m1lib.revocation.revocation_proc import create_database
from tests.services import PG_SERVER, drop_database

NOW = datetime(2026, 12, 3, 3, 30, tzinfo=UTC)
HERE = "api-here"  # the replica this configuration names
DAY = timedelta(days=1)


@pytest.fixture(scope="module")
def pg_database(pg_url: str) -> Iterator[str]:
    """A migrated database of this module's own: nothing else writes commands into it."""
    name = create_database()
    yield f"{PG_SERVER}/{name}"
    drop_database(name)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """An empty, migrated M1 database; the PostgreSQL one is emptied after each test."""
    if request.param == "sqlite":
        settings = Settings(_env_file=None, data_dir=tmp_path)
    else:
        url = request.getfixturevalue("pg_database")
        settings = Settings(_env_file=None, data_dir=tmp_path, database={"url": url})
    with Database(settings) as database:
        upgrade(database)
        yield database
        with database.begin() as connection:
            for model in (
                ControlAck, ControlCommand, Replica, Incident, HealthStreak, CacheTtlObservation
            ):  # fmt: skip
                connection.execute(delete(model))


def cut(**housekeeping_settings: str) -> Cutoffs:
    settings = Settings(
        _env_file=None, replica={"id": HERE}, housekeeping=housekeeping_settings or {}
    )
    return housekeeping.cutoffs(settings, NOW)


def add_command(db: Database, expires_at: datetime, acked_by: tuple[str, ...] = ()) -> int:
    with db.transaction() as session:
        command = ControlCommand(
            name="cache.evict",
            args={},
            target=None,
            created_by="test",
            created_at=expires_at - timedelta(hours=1),
            expires_at=expires_at,
        )
        session.add(command)
        session.flush()
        for replica in acked_by:
            session.add(
                ControlAck(
                    command_id=command.id, replica_id=replica, ok=True, detail="", applied_at=NOW
                )
            )
        return int(command.id)


def add_replica(db: Database, replica_id: str, last_seen: datetime) -> None:
    with db.transaction() as session:
        session.add(
            Replica(
                id=replica_id,
                base_url="http://127.0.0.1:8000",
                hostname="h",
                pid=1,
                started_at=last_seen - DAY,
                last_seen=last_seen,
                cache_backend="memory",
                rss_bytes=0,
                queue_drops=0,
            )
        )


def command_ids(db: Database) -> list[int]:
    with db.transaction() as session:
        return list(session.scalars(select(ControlCommand.id).order_by(ControlCommand.id)))


def acks(db: Database) -> list[tuple[int, str]]:
    with db.transaction() as session:
        rows = session.execute(select(ControlAck.command_id, ControlAck.replica_id)).all()
    return sorted((int(row[0]), row[1]) for row in rows)


def replica_ids(db: Database) -> list[str]:
    with db.transaction() as session:
        return list(session.scalars(select(Replica.id).order_by(Replica.id)))


def by_table(summary: HousekeepingSummary) -> dict[str, int]:
    return {item.table: item.rows for item in summary.tables}


def test_cutoffs_follow_the_settings_and_keep_the_current_replica() -> None:
    cutoffs = cut(replica_gone_after="2d", incident_retention="30d", streak_retention="12h")
    assert cutoffs.commands_expired_before == NOW
    assert cutoffs.replicas_seen_before == NOW - 2 * DAY
    assert cutoffs.incidents_resolved_before == NOW - 30 * DAY
    assert cutoffs.streaks_updated_before == NOW - timedelta(hours=12)
    assert cutoffs.current_replica == HERE
    defaults = cut()
    assert defaults.replicas_seen_before == NOW - 7 * DAY
    assert defaults.incidents_resolved_before == NOW - 90 * DAY
    assert defaults.streaks_updated_before == NOW - 30 * DAY


def test_cutoffs_refuse_a_naive_now() -> None:
    with pytest.raises(InputError, match=r"now: .* no time zone"):
        housekeeping.cutoffs(Settings(_env_file=None), datetime(2026, 12, 3))


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("M1_HOUSEKEEPING_REPLICA_GONE_AFTER", "30m"),
        ("M1_HOUSEKEEPING_INCIDENT_RETENTION", "12h"),
        ("M1_HOUSEKEEPING_STREAK_RETENTION", "0"),
    ],
)
def test_retentions_too_short_to_be_safe_are_refused(
    name: str, value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match="greater than or equal"):
        Settings(_env_file=None)


def test_count_says_what_would_go_and_deletes_nothing(db: Database) -> None:
    expired = [add_command(db, NOW - DAY, ("a", "b")), add_command(db, NOW - timedelta(seconds=1))]
    live = add_command(db, NOW + timedelta(minutes=5), ("a",))
    add_replica(db, "gone", NOW - 8 * DAY)
    add_replica(db, "live", NOW - timedelta(seconds=5))
    summary = housekeeping.count(db, cut())
    assert summary.dry_run
    assert by_table(summary) == {
        "control_commands": 2,
        "control_acks": 2,
        "replicas": 1,
        "incidents": 0,
        "health_streaks": 0,
        "cache_ttl_observations": 0,
    }
    assert summary.total == 5
    assert command_ids(db) == [*expired, live]
    assert len(acks(db)) == 3
    assert replica_ids(db) == ["gone", "live"]


def test_prune_deletes_exactly_the_expired_commands_with_their_acks_in_batches(
    db: Database,
) -> None:
    expired = [add_command(db, NOW - timedelta(hours=h), ("a", "b")) for h in range(1, 6)]
    boundary = add_command(db, NOW, ("a",))  # expires at the cut-off: kept until the next run
    live = add_command(db, NOW + timedelta(hours=1), ("a", "b"))
    summary = housekeeping.prune(db, cut(), batch_size=2)  # 5 expired: three batches
    assert not summary.dry_run
    assert (summary.rows_of("control_commands"), summary.rows_of("control_acks")) == (5, 10)
    assert command_ids(db) == [boundary, live]
    assert acks(db) == [(boundary, "a"), (live, "a"), (live, "b")]
    assert not set(expired) & {command for command, _ in acks(db)}
    assert housekeeping.prune(db, cut()).total == 0  # a retry finds nothing left


def test_prune_removes_gone_replicas_and_keeps_live_ones_the_boundary_and_its_own(
    db: Database,
) -> None:
    gone_after = 7 * DAY
    add_replica(db, "gone-long-ago", NOW - 30 * DAY)
    add_replica(db, "gone", NOW - gone_after - timedelta(seconds=1))
    add_replica(db, "boundary", NOW - gone_after)  # gone exactly that long: kept
    add_replica(db, "live", NOW - timedelta(seconds=3))
    add_replica(db, HERE, NOW - 60 * DAY)  # this configuration's own replica: never pruned
    assert housekeeping.count(db, cut()).rows_of("replicas") == 2
    summary = housekeeping.prune(db, cut())
    assert summary.rows_of("replicas") == 2
    assert replica_ids(db) == sorted([HERE, "boundary", "live"])


def add_incident(db: Database, component: str, resolved_at: datetime | None) -> int:
    """An incident opened (and, given ``resolved_at``, resolved) by the healing code."""
    with db.transaction() as session:
        row = incidents.open_or_current(
            session,
            component,
            kind="down",
            trigger="3 failing checks",
            started_at=(resolved_at or NOW) - 200 * DAY,
            last_check={},
        )
        if resolved_at is not None:
            session.flush()
            assert incidents.resolve(session, component, resolved_at) is row
        session.flush()
        return int(row.id)


def add_streak(db: Database, component: str, updated_at: datetime) -> None:
    with db.transaction() as session:
        session.add(
            HealthStreak(
                component=component,
                consecutive_failures=2,
                last_status="down",
                last_checked_at=updated_at,
                streak_started_at=updated_at - DAY,
                heals_in_streak=1,
                updated_at=updated_at,
            )
        )


def test_prune_removes_old_resolved_incidents_and_idle_streaks_only(db: Database) -> None:
    retention = 90 * DAY  # M1_HOUSEKEEPING_INCIDENT_RETENTION's default
    old = [
        add_incident(db, "redis", NOW - 400 * DAY),
        add_incident(db, "redis", NOW - retention - timedelta(seconds=1)),
    ]
    boundary = add_incident(db, "redis", NOW - retention)  # resolved exactly that long ago: kept
    recent = add_incident(db, "redis", NOW - 10 * DAY)
    still_open = add_incident(db, "redis", None)  # started 200 days ago, never resolved: kept
    add_streak(db, "redis", NOW - 31 * DAY)
    add_streak(db, "prefect", NOW - 30 * DAY)  # at the cut-off: kept
    add_streak(db, "database", NOW - timedelta(minutes=1))
    preview = housekeeping.count(db, cut())
    assert (preview.rows_of("incidents"), preview.rows_of("health_streaks")) == (2, 1)
    summary = housekeeping.prune(db, cut(), batch_size=1)  # one row per transaction
    assert (summary.rows_of("incidents"), summary.rows_of("health_streaks")) == (2, 1)
    with db.transaction() as session:
        left = list(session.scalars(select(Incident.id).order_by(Incident.id)))
        kept = list(
            session.scalars(select(HealthStreak.component).order_by(HealthStreak.component))
        )
    assert left == [boundary, recent, still_open]
    assert not set(old) & set(left)
    assert kept == ["database", "prefect"]
    assert housekeeping.prune(db, cut()).total == 0


@pytest.mark.parametrize("batch_size", [0, housekeeping.BATCH_MAX + 1, True])
def test_prune_refuses_a_batch_size_out_of_range(db: Database, batch_size: int) -> None:
    with pytest.raises(InputError, match="batch_size"):
        housekeeping.prune(db, cut(), batch_size=batch_size)


def test_summary_rows_name_the_rule_of_each_table() -> None:
    summary = housekeeping.HousekeepingSummary(
        dry_run=True,
        now=NOW,
        tables=(
            housekeeping.TableResult("control_commands", 2, NOW, "expired"),
            housekeeping.TableResult("control_acks", 3, NOW, "expired", parent="control_commands"),
            housekeeping.TableResult("incidents", 0, NOW, "R"),
        ),
    )
    assert summary.rows() == [
        {"table": "control_commands", "rows": 2, "before": "2026-12-03T03:30:00+00:00",
         "rule": "expired"},
        {"table": "control_acks", "rows": 3, "before": "2026-12-03T03:30:00+00:00",
         "rule": "with its control_commands"},
        {"table": "incidents", "rows": 0, "before": "2026-12-03T03:30:00+00:00", "rule": "R"},
    ]  # fmt: skip
    assert (summary.total, summary.rows_of("control_acks")) == (5, 3)


def test_prune_removes_ttl_observations_not_republished_within_the_retention(
    db: Database,
) -> None:
    publish(db, [Observation("gone", "weather", 60.0, "x", 1.0, updated_at=NOW - 2 * DAY),
                 Observation("live", "weather", 60.0, "x", 1.0, updated_at=NOW - timedelta(hours=1))])  # fmt: skip
    assert cut().observations_updated_before == NOW - DAY  # the default retention
    assert housekeeping.prune(db, cut()).rows_of("cache_ttl_observations") == 1
    with db.transaction() as session:
        assert list(session.scalars(select(CacheTtlObservation.process))) == ["live"]
