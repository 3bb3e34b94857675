"""The health-check flow: its body under Prefect (artifact, events, streak rows, dry run, a real
self-heal flow run of a stand-in deployment), and the streak step (``count_and_act``) called with
explicit clocks: consecutive semantics, at most one heal, the database away (streaks in a real
Prefect Variable) and back. Tasks read settings from the environment, as a flow run does."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
from prefect.variables import Variable
from sqlalchemy import select

from flows.health_check import (
    ARTIFACT_KEY,
    SELF_HEAL_FLOW,
    HealStart,
    HealthCheckParams,
    PrefectVariableStore,
    count_and_act,
    health_check,
    start_self_heal,
)
from m1lib.control import CommandRegistry, ReplicaAgent, ReplicaFigures
from m1lib.db.migrate import upgrade
from m1lib.db.models import HealthStreak, Incident
from m1lib.db.session import Database
from m1lib.metrics import MetricsRuntime, install_default
from m1lib.ops import incidents
from m1lib.ops.checks import HEALTH_FLOW_NAME
from m1lib.ops.incidents import append_action
from m1lib.ops.report import COMPONENTS, CheckResult, HealthReport, Status
from m1lib.ops.streaks import HealingPolicy, pause
from m1lib.settings import Settings, get_settings
from tests.fake_http import FakeHttp, Routes, fake_http_servers
from tests.flow_runs import FlowRun
from tests.services import free_port

T0 = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
POLICY = HealingPolicy(threshold=3, cooldown_s=300, max_attempts=3, min_interval_s=30)


@pytest.fixture
def fake_http() -> Iterator[Callable[[Routes], FakeHttp]]:
    yield from fake_http_servers()


@pytest.fixture
def metrics(task_settings: Path) -> Iterator[MetricsRuntime]:
    """An in-memory event runtime as this process's default: the flow's events land in it."""
    runtime = MetricsRuntime(get_settings(), replica_id="test")
    runtime.start()
    previous = install_default(runtime)
    yield runtime
    install_default(previous)
    runtime.close()


@pytest.fixture
def healthy(
    task_settings: Path,
    monkeypatch: pytest.MonkeyPatch,
    fake_http: Callable[[Routes], FakeHttp],
    metrics: MetricsRuntime,
) -> Iterator[Database]:
    """SQLite migrated, no Redis, one replica whose heartbeat points at a ready fake API; latency
    is not graded (on a busy machine a round trip past 500 ms would be a failure of its own)."""
    monkeypatch.setenv("M1_REPLICA_HEARTBEAT_S", "30")
    monkeypatch.setenv("M1_HEALTH_LATENCY_DEGRADED_MS", "60000")
    monkeypatch.setenv("M1_HEALTH_LATENCY_UNHEALTHY_MS", "120000")
    monkeypatch.setenv("M1_HEALTH_CHECK_TIMEOUT_S", "30")
    get_settings.cache_clear()
    replica = fake_http({"/health/ready": (200, {"status": "ready"})})
    with Database(get_settings()) as db:
        upgrade(db)
        settings = get_settings()
        own = settings.model_copy(
            update={
                "replica": settings.replica.model_copy(update={"id": "r1"}),
                "api": settings.api.model_copy(update={"public_url": replica.url}),
            }
        )
        figures = ReplicaFigures(
            cache_backend="memory", revocation_sync_age_s=1.0, store_lag_s=0.0,
            rss_bytes=50_000_000, queue_drops=0,
        )  # fmt: skip
        ReplicaAgent(own, db=db, registry=CommandRegistry(), figures=lambda: figures).heartbeat()
        yield db


def streak_rows(db: Database) -> dict[str, int]:
    with db.transaction() as session:
        return {r.component: r.consecutive_failures for r in session.scalars(select(HealthStreak))}


def incident_rows(db: Database) -> list[Incident]:
    with db.transaction() as session:
        return list(session.scalars(select(Incident).order_by(Incident.id)))


def health_events(runtime: MetricsRuntime) -> dict[tuple[str, str], int]:
    assert runtime.flush()
    query = {"metric": "health_checks", "timeRange": "1h", "groupBy": ["component", "status"],
             "aggregations": ["count"]}  # fmt: skip
    return {(r["component"], r["status"]): int(r["count"]) for r in runtime.run_query(query).rows}


# -- the flow under Prefect ----------------------------------------------------------------------


def test_a_healthy_run_records_events_streaks_and_its_table(
    healthy: Database, metrics: MetricsRuntime, run_flow: Callable[..., FlowRun]
) -> None:
    run = run_flow(health_check)
    assert health_check.name == HEALTH_FLOW_NAME == "health-check"
    components = run.result["components"]
    assert set(components) == set(COMPONENTS)
    assert Status.UNHEALTHY.value not in components.values(), run.result["checks"]
    assert (run.result["dry_run"], run.result["offline"], run.result["actions"]) == (
        False, False, {}
    )  # fmt: skip
    table = run.table(ARTIFACT_KEY)
    assert table == run.result["checks"]
    assert {row["component"] for row in table} == set(COMPONENTS)
    assert set(table[0]) == {
        "component", "measurement", "status", "observed", "latency_ms", "message"
    }  # fmt: skip
    assert sum(health_events(metrics).values()) == len(table)
    assert streak_rows(healthy) == dict.fromkeys(COMPONENTS, 0)
    assert run.description(ARTIFACT_KEY).startswith(f"Health **{run.result['status']}**")


def test_dry_run_checks_and_reports_but_changes_nothing(
    healthy: Database, metrics: MetricsRuntime, run_flow: Callable[..., FlowRun]
) -> None:
    run = run_flow(health_check, HealthCheckParams(dry_run=True))
    assert run.result["dry_run"] is True
    assert len(run.table(ARTIFACT_KEY)) >= len(COMPONENTS)
    assert "Dry run: no event recorded" in run.description(ARTIFACT_KEY)
    assert streak_rows(healthy) == {}
    assert health_events(metrics) == {}


@dataclass
class StandIn:
    """A ``self-heal`` deployment nobody serves: its runs stay Scheduled (active)."""

    deployment_id: Any

    def runs(self) -> list[Any]:
        ids = DeploymentFilter(id=DeploymentFilterId(any_=[self.deployment_id]))
        with get_client(sync_client=True) as client:
            return list(client.read_flow_runs(deployment_filter=ids))


@pytest.fixture
def self_heal_stand_in(prefect_harness: None) -> Iterator[StandIn]:
    @flow(name=SELF_HEAL_FLOW)
    def stand_in(component: str, incident_id: int | None = None, dry_run: bool = False) -> None:
        """Stands in for flows/self_heal.py (another module's)."""

    with get_client(sync_client=True) as client:
        flow_id = client.create_flow(stand_in)
        deployment_id = client.create_deployment(flow_id=flow_id, name="self-heal")
    made = StandIn(deployment_id)
    yield made
    with get_client(sync_client=True) as client:  # no active self-heal run outlives the test
        for run in made.runs():
            client.delete_flow_run(run.id)
        client.delete_deployment(deployment_id)


def test_a_due_heal_starts_one_real_self_heal_run_per_component(
    healthy: Database,
    monkeypatch: pytest.MonkeyPatch,
    run_flow: Callable[..., FlowRun],
    self_heal_stand_in: StandIn,
) -> None:
    """Redis on a closed port with threshold 1: the flow starts self-heal for redis with its
    incident; another start for redis while that run is active is skipped, not for database."""
    monkeypatch.setenv("M1_REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    monkeypatch.setenv("M1_HEALING_THRESHOLD", "1")
    get_settings.cache_clear()
    run = run_flow(health_check)
    assert run.result["components"]["redis"] == "unhealthy"
    assert run.result["actions"]["redis"].startswith("heal started: self-heal flow run")
    (incident,) = incident_rows(healthy)
    (started,) = self_heal_stand_in.runs()
    assert started.parameters == {"component": "redis", "incident_id": incident.id}
    assert started.state_type.value == "SCHEDULED"
    assert [(a["action"], a["outcome"]) for a in incident.actions] == [
        ("heal", "requested"), ("self-heal", "started")
    ]  # fmt: skip
    again = start_self_heal("redis", incident.id, "another-key")
    assert (again.outcome, again.flow_run_id) == ("skipped", None)
    assert str(started.id) in again.detail
    other = start_self_heal("database", None, "k-database")
    assert other.outcome == "started"
    assert len(self_heal_stand_in.runs()) == 2


# -- the streak step with explicit clocks --------------------------------------------------------


def report(at: datetime, **statuses: Status) -> HealthReport:
    checks = tuple(
        CheckResult(c, "responseTime", s, latency_ms=1.0, observed_value=None,
                    observed_unit="ms", message=f"{c} {s.value}", time=at)
        for c, s in statuses.items()
    )  # fmt: skip
    return HealthReport(checks=checks, time=at)


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, int | None]] = []

    def __call__(self, component: str, incident_id: int | None, key: str) -> HealStart:
        self.calls.append((component, incident_id))
        return HealStart(f"run-{len(self.calls)}", "started", f"run {len(self.calls)}")


@pytest.fixture
def store(prefect_harness: None) -> Iterator[PrefectVariableStore]:
    """A real Prefect Variable of this test's own."""
    made = PrefectVariableStore(f"m1-health-streaks-{uuid.uuid4().hex[:12]}")
    yield made
    made.clear()


@pytest.fixture
def db(make_settings: Callable[..., Settings]) -> Iterator[Database]:
    with Database(make_settings()) as database:
        upgrade(database)
        yield database


def run_rounds(
    db: Database, store: PrefectVariableStore, start: Recorder, statuses: list[Status]
) -> list[int]:
    """One report of redis per minute; the round numbers in which a heal was started."""
    healed = []
    for index, status in enumerate(statuses):
        before = len(start.calls)
        count_and_act(
            db, report(T0 + timedelta(minutes=index), redis=status), POLICY,
            start=start, store=store,
        )  # fmt: skip
        if len(start.calls) > before:
            healed.append(index + 1)
    return healed


F, P = Status.UNHEALTHY, Status.HEALTHY


def test_three_failures_in_a_row_start_one_heal_with_the_incident(
    db: Database, store: PrefectVariableStore
) -> None:
    start = Recorder()
    assert run_rounds(db, store, start, [F, F, F, F, F]) == [3]  # then the cooldown
    (incident,) = incident_rows(db)
    assert start.calls == [("redis", incident.id)]
    assert ("self-heal", "started", "run 1") in [
        (a["action"], a["outcome"], a["detail"]) for a in incident.actions
    ]


def test_a_started_heal_is_a_warning_on_the_dashboards_alerts(
    db: Database, store: PrefectVariableStore, make_settings: Callable[..., Settings]
) -> None:
    """The heal itself, not only a later escalation, reaches the alerts a person watches."""
    runtime = MetricsRuntime(make_settings(), replica_id="test")
    runtime.start()
    previous = install_default(runtime)
    try:
        start = Recorder()
        assert run_rounds(db, store, start, [F, F, F]) == [3]
        assert runtime.flush()
        query = {"metric": "error_alerts", "timeRange": "1h", "groupBy": ["level", "source"]}
        assert runtime.run_query(query).rows == [
            {"level": "warning", "source": incidents.ALERT_SOURCE, "count": 1}
        ]
    finally:
        install_default(previous)
        runtime.close()


class StillRunning(Recorder):
    """The first heal starts; every later one finds it still running (a slow heal)."""

    def __call__(self, component: str, incident_id: int | None, key: str) -> HealStart:
        if self.calls:
            self.calls.append((component, incident_id))
            return HealStart(None, "skipped", f"self-heal run run-1 of {component} still active")
        return super().__call__(component, incident_id, key)


def test_a_heal_skipped_while_one_runs_does_not_count_toward_escalation(
    db: Database, store: PrefectVariableStore
) -> None:
    """Past the cooldown every minute a heal is due; while the first still runs none starts, so
    the count of heals stays 1 and nothing escalates, however long the streak."""
    policy = HealingPolicy(threshold=3, cooldown_s=60, max_attempts=2, min_interval_s=30)
    start = StillRunning()
    for index in range(8):
        count_and_act(
            db, report(T0 + timedelta(minutes=index), redis=Status.UNHEALTHY), policy,
            start=start, store=store,
        )  # fmt: skip
    assert len(start.calls) == 6  # rounds 3..8: one started, five skipped
    with db.transaction() as session:
        row = session.scalars(select(HealthStreak)).one()
        assert (row.heals_in_streak, row.escalated_at) == (1, None)
    (incident,) = incident_rows(db)
    assert incident.escalated_at is None


def test_fail_fail_pass_fail_fail_starts_nothing(db: Database, store: PrefectVariableStore) -> None:
    start = Recorder()
    assert run_rounds(db, store, start, [F, F, P, F, F]) == []
    assert streak_rows(db) == {"redis": 2}
    assert incident_rows(db) == []


def test_database_away_keeps_the_streak_in_the_variable_then_merges_it(
    db: Database, store: PrefectVariableStore, make_settings: Callable[..., Settings]
) -> None:
    closed = f"postgresql+psycopg://u@127.0.0.1:{free_port()}/x"
    down = Database(make_settings(database={"url": closed}))
    start = Recorder()
    with down:
        for minute in range(3):
            step = count_and_act(
                down, report(T0 + timedelta(minutes=minute), database=F, redis=P), POLICY,
                start=start, store=store,
            )  # fmt: skip
            assert step.offline
    kept = store.load()
    assert (kept["database"].consecutive_failures, kept["redis"].consecutive_failures) == (3, 0)
    assert start.calls == [("database", None)]  # healed at the 3rd, no incident row to name yet
    step = count_and_act(
        db, report(T0 + timedelta(minutes=3), database=F, redis=P), POLICY,
        start=start, store=store,
    )  # fmt: skip
    assert not step.offline
    (incident,) = incident_rows(db)
    assert [record.id for record in step.merged] == [incident.id]
    assert (incident.component, incident.kind) == ("database", "outage_offline")
    assert incident.started_at.replace(tzinfo=UTC) == T0
    assert streak_rows(db) == {"database": 4, "redis": 0}
    assert store.load() == {}
    assert start.calls == [("database", None)]  # the 4th is within the cooldown


def test_a_variable_not_written_by_the_flow_is_ignored(store: PrefectVariableStore) -> None:
    Variable.set(store.name, {"redis": {"consecutive_failures": "many"}}, overwrite=True)
    assert store.load() == {}
    Variable.set(store.name, [1, 2], overwrite=True)
    assert store.load() == {}


# -- Redis back while caches sit on memory ---------------------------------------------------------


def migrated(settings: Settings) -> Database:
    database = Database(settings)
    upgrade(database)
    return database


@pytest.fixture
def redis_db(make_settings: Callable[..., Settings]) -> Iterator[Database]:
    """SQLite migrated, with a Redis configured (never called here: the reports are given)."""
    with migrated(make_settings(redis={"url": f"redis://127.0.0.1:{free_port()}/0"})) as database:
        yield database


def beat(db: Database, replica_id: str, backend: str) -> None:
    """One heartbeat of ``replica_id`` reporting its cache on ``backend``."""
    own = db.settings.model_copy(
        update={"replica": db.settings.replica.model_copy(update={"id": replica_id})}
    )
    figures = ReplicaFigures(cache_backend=backend)
    ReplicaAgent(own, db=db, registry=CommandRegistry(), figures=lambda: figures).heartbeat()


def pinned_incident(db: Database, store: PrefectVariableStore, start: Recorder) -> int:
    """Three failing rounds, then the heal's step that pinned the caches to memory (as the
    self-heal flow records it); the incident's id."""
    assert run_rounds(db, store, start, [F, F, F]) == [3]
    (incident,) = incident_rows(db)
    append_action(db, incident.id, "cache-to-memory", "mitigated", "command 1: 2 ok")
    return int(incident.id)


def test_redis_passing_with_caches_on_memory_starts_the_move_back_on_the_pinning_incident(
    redis_db: Database, store: PrefectVariableStore
) -> None:
    """The heal pinned the caches; Redis answers again: the passing check resolves the incident
    and starts self-heal for redis (which only moves them back) with that incident, once per
    round; after the move back is recorded, a replica still on memory starts it without one."""
    start = Recorder()
    incident_id = pinned_incident(redis_db, store, start)
    beat(redis_db, "r1", "memory")
    beat(redis_db, "r2", "redis")
    step = count_and_act(redis_db, report(T0 + timedelta(minutes=3), redis=P), POLICY,
                         start=start, store=store)  # fmt: skip
    assert start.calls == [("redis", incident_id), ("redis", incident_id)]
    assert step.actions["redis"].startswith("back to redis started: caches of r1 on memory")
    (incident,) = incident_rows(redis_db)
    assert incident.resolved_at is not None
    assert [(a["action"], a["outcome"]) for a in incident.actions][-2:] == [
        ("resolve", "resolved"), ("self-heal", "started")
    ]  # fmt: skip
    append_action(redis_db, incident_id, "cache-back-to-redis", "healed", "now redis")
    count_and_act(redis_db, report(T0 + timedelta(minutes=4), redis=P), POLICY,
                  start=start, store=store)  # fmt: skip
    assert start.calls[-1] == ("redis", None)
    assert len(start.calls) == 3


@pytest.mark.parametrize("case", ["caches on redis", "redis failing", "paused", "no redis"])
def test_no_move_back_when_nothing_is_on_memory_redis_fails_healing_is_paused_or_no_redis(
    case: str, make_settings: Callable[..., Settings], store: PrefectVariableStore
) -> None:
    redis = None if case == "no redis" else f"redis://127.0.0.1:{free_port()}/0"
    with migrated(make_settings(redis={"url": redis})) as target:
        beat(target, "r1", "redis" if case == "caches on redis" else "memory")
        if case == "paused":
            pause(target, "redis", "ops@example.com")
        start = Recorder()
        status = F if case == "redis failing" else P
        step = count_and_act(target, report(T0, redis=status), POLICY, start=start, store=store)
    assert start.calls == []
    expected = "suppressed: caches of r1 on memory, healing paused by ops@example.com"
    assert step.actions.get("redis") == (expected if case == "paused" else None)
