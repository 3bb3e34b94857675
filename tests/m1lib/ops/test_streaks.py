"""The healing rule: consecutive semantics (pure, injected clock), and its database layer."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest

from m1lib.db import migrate
from m1lib.db.session import Database
from m1lib.errors import InputError
from m1lib.ops import incidents, streaks
from m1lib.ops.report import CheckResult, HealthReport, Status
from m1lib.ops.streaks import Action, HealingPolicy, StreakState, step
from m1lib.settings import Settings

T0 = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
PERIOD = timedelta(seconds=60)
POLICY = HealingPolicy(threshold=3, cooldown_s=300, max_attempts=2, min_interval_s=30)
FAIL, PASS = Status.UNHEALTHY, Status.HEALTHY


def run(statuses: list[Status], policy: HealingPolicy = POLICY, **kwargs: str) -> list[Action]:
    """The decisions for one component's checks, one per PERIOD from T0."""
    state = StreakState("redis")
    actions = []
    for index, status in enumerate(statuses):
        outcome = step(state, status, T0 + index * PERIOD, policy, paused_by=kwargs.get("paused"))
        state = outcome.state
        actions.append(outcome.decision.action)
    return actions


H, N, E, S = Action.HEAL, Action.NOTHING, Action.ESCALATE, Action.SUPPRESSED


def test_two_failures_a_pass_and_two_failures_do_not_heal() -> None:
    assert run([FAIL, FAIL, PASS, FAIL, FAIL]) == [N] * 5


def test_three_in_a_row_heal_once_and_degraded_is_no_failure() -> None:
    assert run([FAIL, FAIL, FAIL, FAIL]) == [N, N, H, N]
    assert run([FAIL, FAIL, Status.DEGRADED, FAIL, FAIL]) == [N] * 5


def test_re_heal_only_after_the_cooldown_then_escalate_once() -> None:
    # cooldown 300 s = 5 periods: heal at the 3rd, again at the 8th, escalate at the 13th (2 heals)
    actions = run([FAIL] * 16)
    assert [i for i, a in enumerate(actions) if a is not N] == [2, 7, 12]
    assert (actions[2], actions[7], actions[12]) == (H, H, E)


def test_a_pass_resets_the_streak_and_a_new_streak_heals_after_the_cooldown() -> None:
    policy = HealingPolicy(threshold=2, cooldown_s=0, max_attempts=5)
    assert run([FAIL, FAIL, PASS, FAIL, FAIL], policy) == [N, H, N, N, H]
    state = StreakState("redis")
    for index, status in enumerate([FAIL, FAIL, PASS]):
        state = step(state, status, T0 + index * PERIOD, policy).state
    assert (state.consecutive_failures, state.heals_in_streak, state.escalated_at) == (0, 0, None)


def test_paused_suppresses_what_was_due_and_keeps_counting() -> None:
    actions = run([FAIL] * 4, paused="ops-admin")
    assert actions == [N, N, S, S]
    outcome = step(StreakState("redis", 2), FAIL, T0, POLICY, paused_by="ops-admin")
    assert outcome.decision.suppressed_by == "ops-admin"
    assert outcome.state.consecutive_failures == 3
    assert outcome.state.heals_in_streak == 0


def test_a_report_within_min_interval_counts_nothing() -> None:
    first = step(StreakState("redis"), FAIL, T0, POLICY)
    again = step(first.state, FAIL, T0 + timedelta(seconds=5), POLICY)
    assert not again.counted
    assert again.state == first.state
    older = step(first.state, FAIL, T0 - PERIOD, POLICY)
    assert not older.counted


def test_streak_state_round_trips_through_json() -> None:
    state = StreakState("database", 4, FAIL, T0, T0 - PERIOD, 1, T0, None)
    assert StreakState.from_json(state.to_json()) == state
    import json

    assert StreakState.from_json(json.dumps(state.to_json())) == state
    with pytest.raises(InputError):
        StreakState.from_json({"consecutive_failures": 1})


# -- the database layer ---------------------------------------------------------------------------


def report(at: datetime, **statuses: Status) -> HealthReport:
    checks = tuple(
        CheckResult(name, "probe", status, 1.0, 1.0, "ms", f"{name} is {status}", time=at)
        for name, status in statuses.items()
    )
    return HealthReport(checks, time=at)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, make_settings: Callable[..., Settings]) -> str | None:
    if request.param == "sqlite":
        return None
    return str(request.getfixturevalue("fresh_pg_url"))


@pytest.fixture
def open_db(
    db_url: str | None, make_settings: Callable[..., Settings]
) -> Iterator[Callable[[], Database]]:
    """Databases on one URL (a new one is a restart: new objects, same data)."""
    settings = make_settings(**({"database": {"url": db_url}} if db_url else {}))
    made: list[Database] = []

    def factory() -> Database:
        db = Database(settings)
        made.append(db)
        return db

    migrate.upgrade(factory())
    yield factory
    for db in made:
        db.dispose()


def test_record_report_heals_once_restart_keeps_the_count_and_a_pass_resolves(
    open_db: Callable[[], Database],
) -> None:
    sent: list[incidents.IncidentRecord] = []
    policy = HealingPolicy(threshold=3, cooldown_s=120, max_attempts=1, min_interval_s=30)
    db = open_db()
    first = streaks.record_report(db, report(T0, redis=FAIL, database=PASS), policy)
    assert first["redis"].state.consecutive_failures == 1
    streaks.record_report(db, report(T0 + PERIOD, redis=FAIL, database=PASS), policy)
    db.dispose()
    db = open_db()  # a restart mid-streak: the count is in the database
    third = streaks.record_report(
        db, report(T0 + 2 * PERIOD, redis=FAIL, database=PASS), policy, escalate=sent.append
    )
    assert third["redis"].decision.action is Action.HEAL
    assert third["database"].decision.action is Action.NOTHING
    page = incidents.list_incidents(db)
    assert [(i.component, i.status) for i in page.items] == [("redis", "open")]
    assert page.items[0].started_at == T0
    assert page.items[0].runbook == "docs/runbooks/redis.md"
    assert [a["action"] for a in page.items[0].actions] == ["heal"]
    assert page.items[0].last_check["checks"][0]["componentId"] == "redis"
    for index in (3, 4):  # cooldown 120 s: the 5th check escalates (max_attempts 1)
        outcome = streaks.record_report(
            db, report(T0 + index * PERIOD, redis=FAIL), policy, escalate=sent.append
        )
    assert outcome["redis"].decision.action is Action.ESCALATE
    assert [(i.id, i.status) for i in sent] == [(page.items[0].id, "escalated")]
    passed = streaks.record_report(db, report(T0 + 5 * PERIOD, redis=PASS), policy)
    assert passed["redis"].state.consecutive_failures == 0
    (incident,) = incidents.list_incidents(db, component="redis").items
    assert incident.status == "resolved"
    assert incident.resolved_at == T0 + 5 * PERIOD
    assert incident.escalated_at == T0 + 4 * PERIOD
    assert [a["action"] for a in incident.actions] == ["heal", "escalate", "resolve"]
    assert streaks.load_states(db)["redis"].heals_in_streak == 0


def test_paused_component_is_suppressed_by_the_credential(
    open_db: Callable[[], Database],
) -> None:
    db = open_db()
    policy = HealingPolicy(threshold=1, cooldown_s=0, max_attempts=5)
    streaks.pause(db, None, "ops-admin", "maintenance")
    for index in range(3):
        outcome = streaks.record_report(db, report(T0 + index * PERIOD, redis=FAIL), policy)
        assert outcome["redis"].decision.action is Action.SUPPRESSED
    (incident,) = incidents.list_incidents(db).items
    assert incident.suppressed_by == "ops-admin"
    assert [a["action"] for a in incident.actions] == ["suppressed"]  # once, not per check
    streaks.resume(db, None, "ops-admin")
    assert streaks.paused_by(db, "redis") is None
    outcome = streaks.record_report(db, report(T0 + 3 * PERIOD, redis=FAIL), policy)
    assert outcome["redis"].decision.action is Action.HEAL
    streaks.pause(db, "redis", "ops-2")
    assert streaks.paused_by(db, "redis") == "ops-2"
    assert streaks.paused_by(db, "api") is None
    with pytest.raises(InputError):
        streaks.pause(db, "nonsense", "ops-2")


def test_merge_offline_writes_kept_streaks_and_opens_the_database_incident(
    open_db: Callable[[], Database],
) -> None:
    db = open_db()
    streaks.record_report(db, report(T0, database=PASS, redis=PASS), POLICY)
    kept: dict[str, StreakState] = {}
    for index in range(1, 5):  # the database is away: the flow keeps the streak itself
        outcomes = streaks.advance(
            kept, {"database": FAIL, "redis": PASS}, T0 + index * PERIOD, POLICY
        )
        kept = {name: outcome.state for name, outcome in outcomes.items()}
    saved = [StreakState.from_json(state.to_json()) for state in kept.values()]
    opened = streaks.merge_offline(db, saved, now=T0 + 5 * PERIOD)  # the settings: threshold 3
    assert [(i.component, i.kind, i.started_at) for i in opened] == [
        ("database", "outage_offline", T0 + PERIOD)
    ]
    assert streaks.load_states(db)["database"].consecutive_failures == 4
    assert streaks.merge_offline(db, saved, POLICY) == []  # not newer: nothing again
    streaks.record_report(db, report(T0 + 6 * PERIOD, database=PASS), POLICY)
    (incident,) = incidents.list_incidents(db).items
    assert incident.status == "resolved"


def test_two_concurrent_recorders_count_a_round_once(open_db: Callable[[], Database]) -> None:
    """Two health runs (own engines, as two processes) record the same round at once."""
    dbs = [open_db(), open_db()]
    policy = HealingPolicy(threshold=3, cooldown_s=10_000, max_attempts=5, min_interval_s=30)
    decisions: list[Action] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    for round_ in range(6):
        barrier = threading.Barrier(2)

        def record(
            db: Database, offset_s: float, at: int = round_, gate: threading.Barrier = barrier
        ) -> None:
            gate.wait()
            when = T0 + at * PERIOD + timedelta(seconds=offset_s)
            try:
                outcome = streaks.record_report(db, report(when, redis=FAIL, api=FAIL), policy)
            except BaseException as error:
                errors.append(error)
                raise
            with lock:
                decisions.extend(o.decision.action for o in outcome.values() if o.counted)

        threads = [
            threading.Thread(target=record, args=(db, offset))
            for db, offset in zip(dbs, (0.0, 1.0), strict=True)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert errors == []
    states = streaks.load_states(dbs[0])
    assert states["redis"].consecutive_failures == 6, states
    assert states["api"].consecutive_failures == 6, states
    assert decisions.count(Action.HEAL) == 2  # once per component, not once per recorder
    assert states["redis"].heals_in_streak == 1
    assert len(incidents.list_incidents(dbs[0]).items) == 2
