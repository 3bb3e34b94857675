"""Health check: measure every component, record it, count each one's streak, start the heals due.

One task per component runs its check (concurrently); the results make one ``HealthReport``,
recorded as ``health_checks`` events (replicas turn them into ``health_status``) and shown as a
table artifact. Then the healing rule (:mod:`m1lib.ops.streaks`): each component's streak of
consecutive failures is counted in the database; while the database is unreachable it is kept in
the Prefect Variable ``m1-health-streaks`` and merged (with the incident of the outage) when the
database answers again. A due heal starts the ``self-heal`` deployment for that component as its
own flow run, without waiting, at most one at a time per component; a due escalation tells a
person (:func:`m1lib.ops.incidents.escalate`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound
from prefect.settings import get_current_settings
from prefect.variables import Variable
from pydantic import BaseModel, Field
from sqlalchemy import select

from flows.credentials import api_key_from_block
from flows.shape import FlowReport, apply_unless_dry_run, publish
from m1lib import control
from m1lib.alerts import raise_alert
from m1lib.db.models import Incident
from m1lib.db.session import Database
from m1lib.errors import DatabaseUnavailable, InputError
from m1lib.metrics import default_runtime, record_event
from m1lib.ops import incidents, streaks
from m1lib.ops.checks import HEALTH_FLOW_NAME, HealthChecker, run_full_health_check
from m1lib.ops.remediation import BACK_TO_REDIS, plan
from m1lib.ops.report import COMPONENTS, CheckResult, HealthReport, Status, runbook
from m1lib.ops.streaks import (
    Action,
    HealingPolicy,
    Outcome,
    StreakState,
    advance,
    merge_offline,
    record_report,
)
from m1lib.redis_conn import make_redis
from m1lib.settings import Settings, get_settings

__all__ = [
    "ARTIFACT_KEY",
    "SELF_HEAL_DEPLOYMENT",
    "STREAKS_VARIABLE",
    "HealStart",
    "HealthCheckParams",
    "PrefectVariableStore",
    "StreakStep",
    "count_and_act",
    "health_check",
    "health_report",
    "start_self_heal",
]

logger = logging.getLogger("m1.flows.health")

ARTIFACT_KEY: Final = "health-check"
STREAKS_VARIABLE: Final = "m1-health-streaks"
SELF_HEAL_FLOW: Final = "self-heal"
SELF_HEAL_DEPLOYMENT: Final = f"{SELF_HEAL_FLOW}/self-heal"
# the Redis plan's step that pins every cache to memory (its name as the incident records it)
PIN_TO_MEMORY_STEP: Final = next(s.name for s in plan("redis") if s.args.get("backend") == "memory")
# a self-heal run in one of these states is "running" for the at-most-one rule (Late is SCHEDULED)
ACTIVE: Final = [
    StateType.SCHEDULED,
    StateType.PENDING,
    StateType.RUNNING,
    StateType.PAUSED,
    StateType.CANCELLING,
]


class HealthCheckParams(BaseModel):
    dry_run: bool = Field(
        False,
        description="Check and report only: no event recorded, no streak counted, no heal started.",
    )


# -- the checks ----------------------------------------------------------------------------------


def _prefect_api_url(settings: Settings) -> str:
    """The API this flow run talks to (the runner's or worker's), else M1's local server."""
    return str(get_current_settings().api.url or settings.prefect_api_url)


@contextmanager
def health_checker(settings: Settings) -> Iterator[HealthChecker]:
    """A checker on this run's database, Redis, event runtime and Prefect API; closed at exit."""
    with Database(settings) as db:
        checker = HealthChecker(
            settings=settings,
            db=db,
            redis_client=make_redis(settings),
            metrics=default_runtime(),
            prefect_api_url=_prefect_api_url(settings),
        )
        try:
            yield checker
        finally:
            checker.close()


@task(name="check-component", task_run_name="check-{component}", cache_policy=NO_CACHE)
def check_component(checker: HealthChecker, component: str) -> list[CheckResult]:
    """One component's checks, within M1_HEALTH_CHECK_TIMEOUT_S; never raises (a failure is the
    finding), so no retry: the next run is the retry."""
    return list(run_full_health_check(checker, components=[component]).checks)


def record_health_events(report: HealthReport) -> int:
    """One ``health_checks`` event per check (queued: no I/O here); how many."""
    for check in report.checks:
        record_event(
            "health_checks",
            timestamp=check.time,
            component=check.component,
            status=check.status.value,
            latencyMs=float(check.latency_ms),
        )
    return len(report.checks)


# -- the streaks and the actions -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HealStart:
    """What starting a self-heal did: the flow run started (None: none) and why, for the incident."""

    flow_run_id: str | None
    outcome: str  # started, skipped, failed
    detail: str


StartSelfHeal = Callable[[str, int | None, str], HealStart]
"""``(component, incident_id, idempotency_key) -> HealStart``: :func:`start_self_heal` in a run."""


class PrefectVariableStore:
    """Streaks kept in the Prefect Variable ``m1-health-streaks`` while the database is away."""

    def __init__(self, name: str = STREAKS_VARIABLE) -> None:
        self.name = name

    def load(self) -> dict[str, StreakState]:
        """The kept streaks; none when the Variable is absent or not what :meth:`save` wrote
        (logged: a hand-edited Variable must not stop every health run)."""
        raw = Variable.get(self.name, default=None)
        if raw is None:
            return {}
        try:
            if not isinstance(raw, dict):
                raise InputError("streak", "is not a JSON object")
            return {str(c): StreakState.from_json(value) for c, value in raw.items()}
        except InputError as error:
            logger.warning("Variable %s ignored: %s", self.name, error)
            return {}

    def save(self, states: Mapping[str, StreakState]) -> None:
        value = {c: state.to_json() for c, state in sorted(states.items())}
        Variable.set(self.name, value, overwrite=True)

    def clear(self) -> None:
        Variable.unset(self.name)


@dataclass(frozen=True)
class StreakStep:
    """What the streak step did: each component's outcome, where the streaks live now, the
    incidents written for an outage on the database's return, and each action taken."""

    outcomes: dict[str, Outcome] = field(default_factory=dict)
    offline: bool = False  # kept in the Variable: the database was unreachable
    merged: list[incidents.IncidentRecord] = field(default_factory=list)
    actions: dict[str, str] = field(default_factory=dict)  # component -> what was done


def _running_self_heals(component: str) -> list[str]:
    """Self-heal flow runs of ``component`` scheduled, pending, running or paused (their ids)."""
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[SELF_HEAL_FLOW])),
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=ACTIVE))
            ),
            limit=200,
        )
    return [str(run.id) for run in runs if (run.parameters or {}).get("component") == component]


def start_self_heal(component: str, incident_id: int | None, idempotency_key: str) -> HealStart:
    """Start the ``self-heal`` deployment for ``component`` unless one of its runs is still
    active; do not wait for it. The idempotency key makes a retried start the same run."""
    active = _running_self_heals(component)
    if active:
        return HealStart(None, "skipped", f"self-heal run {active[0]} of {component} still active")
    try:
        run = run_deployment(
            SELF_HEAL_DEPLOYMENT,
            parameters={"component": component, "incident_id": incident_id},
            timeout=0,
            idempotency_key=idempotency_key,
            tags=["m1", "self-heal"],
            as_subflow=False,
        )
    except ObjectNotFound:
        return HealStart(None, "failed", f"no deployment {SELF_HEAL_DEPLOYMENT} to start")
    assert isinstance(run, FlowRun)  # called from sync code: not awaitable
    return HealStart(str(run.id), "started", f"self-heal flow run {run.id} ({run.name})")


def _incident_id(db: Database, component: str) -> int | None:
    with db.transaction() as session:
        row = incidents.current(session, component)
        return None if row is None else row.id


def _heal(db: Database | None, outcome: Outcome, start: StartSelfHeal, offline: bool) -> str:
    component = outcome.state.component
    incident_id = None if offline or db is None else _incident_id(db, component)
    started_at = outcome.state.streak_started_at or outcome.state.last_checked_at
    key = (
        f"m1-self-heal:{component}:{started_at.isoformat() if started_at else '-'}:"
        f"{outcome.state.heals_in_streak}"
    )
    started = _start(db, component, incident_id, key, start)
    if started.outcome == "skipped" and db is not None:
        streaks.uncount_heal(db, outcome)  # not run: it does not count toward escalation
    if started.outcome == "started":
        _tell_heal_started(outcome, incident_id, started)
    return f"heal {started.outcome}: {started.detail}"


def _tell_heal_started(outcome: Outcome, incident_id: int | None, started: HealStart) -> None:
    """A warning on the dashboard's alerts: a component failed long enough to heal, and M1 is
    on it (an escalation, later, is the critical one)."""
    component = outcome.state.component
    incident = f"incident {incident_id}" if incident_id is not None else "incident on return"
    try:
        raise_alert(
            "warning",
            incidents.ALERT_SOURCE,
            f"{component}: {outcome.state.consecutive_failures} failing checks in a row; "
            f"self-heal started ({incident}; runbook {runbook(component)})",
            metadata={"component": component, "incident": incident_id, "run": started.flow_run_id},
        )
    except Exception as error:  # telling is best effort: the heal has started either way
        logger.warning("%s: heal-started alert not recorded (%s)", component, error)


def _start(
    db: Database | None, component: str, incident_id: int | None, key: str, start: StartSelfHeal
) -> HealStart:
    """Start a self-heal run through ``start``; a failure to start is an outcome, not an error.
    The start is appended to ``incident_id`` when there is one."""
    try:
        started = start(component, incident_id, key)
    except Exception as error:  # Prefect unreachable: the incident says so, the run goes on
        started = HealStart(None, "failed", f"self-heal not started ({type(error).__name__})")
    logger.info("%s: self-heal %s: %s", component, started.outcome, started.detail)
    if db is not None and incident_id is not None:
        incidents.append_action(db, incident_id, "self-heal", started.outcome, started.detail)
    return started


def _replicas_on_memory(db: Database) -> list[str]:
    """Live replicas whose last heartbeat reports their cache on memory (the figure does not say
    whether pinned or by the breaker; either way a back-to-redis step is what takes it back)."""
    within = 3 * db.settings.replica.heartbeat_s
    return [r.id for r in control.live_replicas(db, within) if r.cache_backend == "memory"]


def _pinning_incident(db: Database) -> int | None:
    """The newest Redis incident whose heal pinned the caches to memory (a ``cache-to-memory``
    step) and has not recorded them back since: the move back belongs on it, resolved or not."""
    with db.transaction() as session:
        row = session.scalars(
            select(Incident)
            .where(Incident.component == "redis")
            .order_by(Incident.id.desc())
            .limit(1)
        ).first()
        if row is None:
            return None
        steps = [str(action.get("action")) for action in row.actions or []]
        pinned = max((i for i, s in enumerate(steps) if s == PIN_TO_MEMORY_STEP), default=-1)
        unpinned = max((i for i, s in enumerate(steps) if s == BACK_TO_REDIS.name), default=-1)
        return int(row.id) if pinned > unpinned else None


def _back_to_redis(
    db: Database, report: HealthReport, outcome: Outcome | None, start: StartSelfHeal
) -> str | None:
    """Redis passes while live replicas' caches sit on memory: start self-heal for redis, which
    then only moves them back (flows/self_heal.py ``choose_steps``). Nothing moves a cache pinned
    by a heal otherwise. None when there is nothing to do; same one-run-per-component guard as a
    heal (``start``); suppressed while Redis healing is paused."""
    status = report.by_component().get("redis")
    if status is None or status.failing or outcome is None or not outcome.counted:
        return None
    if db.settings.redis_url is None:  # no Redis configured: memory is where the cache belongs
        return None
    try:
        on_memory = _replicas_on_memory(db)
        if not on_memory:
            return None
        paused = streaks.paused_by(db, "redis")
        if paused is not None:
            return f"suppressed: caches of {', '.join(on_memory)} on memory, healing paused by {paused}"
        incident_id = _pinning_incident(db)
    except DatabaseUnavailable as error:  # gone since the count: the next run sees it again
        logger.warning("redis: caches on memory not looked at (%s)", error)
        return None
    key = f"m1-self-heal:redis:back-to-redis:{report.time.isoformat()}"
    started = _start(db, "redis", incident_id, key, start)
    return (
        f"back to redis {started.outcome}: caches of {', '.join(on_memory)} on memory; "
        f"{started.detail}"
    )


def _escalate_offline(outcome: Outcome, settings: Settings, at: datetime) -> str:
    """An escalation due while the database is away: told now, the incident written on return
    (``id`` 0 in the alert and webhook: it has none yet)."""
    state = outcome.state
    record = incidents.IncidentRecord(
        id=0,
        component=state.component,
        kind="outage_offline",
        trigger=f"{state.consecutive_failures} consecutive failing checks (database unreachable)",
        status="escalated",
        started_at=state.streak_started_at or at,
        resolved_at=None,
        escalated_at=at,
        suppressed_by=None,
        runbook=runbook(state.component),
        actions=[],
        last_check={"lastStatus": state.last_status.value if state.last_status else None},
    )
    incidents.escalate(record, settings)
    return f"escalated: {outcome.decision.reason}"


def count_and_act(
    db: Database,
    report: HealthReport,
    policy: HealingPolicy,
    *,
    now: datetime | None = None,
    start: StartSelfHeal = start_self_heal,
    store: PrefectVariableStore | None = None,
) -> StreakStep:
    """Count ``report`` into the streaks and act on each decision.

    With the database: the streaks kept during an outage are merged first (their incidents
    written), the report counted (:func:`record_report`, which also sends its escalations), and
    the kept copy cleared only then. Without it (``DatabaseUnavailable``): the kept copy is
    advanced by the same pure rule and saved back; pauses cannot be read then, so none applies.
    Each due heal starts a self-heal run through ``start``; so does Redis passing while live
    replicas' caches are still on memory (:func:`_back_to_redis`).
    """
    at = now or report.time
    kept_store = store or PrefectVariableStore()
    kept = kept_store.load()
    merged: list[incidents.IncidentRecord] = []
    offline = False
    try:
        if kept:
            merged = merge_offline(db, kept.values(), policy, now=at)
        outcomes = record_report(db, report, policy, now=at)
        if kept:
            kept_store.clear()
    except DatabaseUnavailable as error:
        offline = True
        logger.warning("database unreachable (%s): streaks kept in %s", error, kept_store.name)
        outcomes = advance(kept, report.by_component(), at, policy)
        kept_store.save({**kept, **{c: o.state for c, o in outcomes.items() if o.counted}})
    actions: dict[str, str] = {}
    for component, outcome in outcomes.items():
        if not outcome.counted:
            continue
        action = outcome.decision.action
        if action is Action.HEAL:
            actions[component] = _heal(None if offline else db, outcome, start, offline)
        elif action is Action.ESCALATE:
            actions[component] = (
                _escalate_offline(outcome, db.settings, at)
                if offline
                else f"escalated: {outcome.decision.reason}"
            )
        elif action is Action.SUPPRESSED:
            actions[component] = f"suppressed: {outcome.decision.reason}"
    if not offline and "redis" not in actions:
        back = _back_to_redis(db, report, outcomes.get("redis"), start)
        if back is not None:
            actions["redis"] = back
    return StreakStep(outcomes=outcomes, offline=offline, merged=merged, actions=actions)


@task(name="count-health-streaks", cache_policy=NO_CACHE)
def count_streaks(report: HealthReport) -> StreakStep:
    """The streak step on this run's database and the settings' policy. No retry: an outage is
    handled (the Variable), and counting a report twice is what the rule refuses anyway."""
    settings = get_settings()
    with Database(settings) as db:
        return count_and_act(db, report, HealingPolicy.from_settings(settings))


# -- the flow ------------------------------------------------------------------------------------


@flow(name=HEALTH_FLOW_NAME, log_prints=True)
def health_check(params: HealthCheckParams | None = None) -> dict[str, Any]:
    """Check every component of M1, record the results, and heal what failed too long.

    Scheduled every M1_HEALTH_PERIOD_S (prefect.yaml: 60 s), never two at once. With dry_run it
    checks and reports only: no event, no streak counted, no self-heal started.
    """
    api_key_from_block()  # before anything records: events then reach the replicas
    params = params or HealthCheckParams()
    settings = get_settings()
    with health_checker(settings) as checker:
        futures = [check_component.submit(checker, component) for component in COMPONENTS]
        report = HealthReport(checks=tuple(r for future in futures for r in future.result()))
    step = apply_unless_dry_run(
        params.dry_run,
        apply=lambda: _apply(report),
        rehearse=lambda: StreakStep(),
    )
    return publish(health_report(report, step, params.dry_run))


def _apply(report: HealthReport) -> StreakStep:
    record_health_events(report)
    return count_streaks(report)


def health_report(report: HealthReport, step: StreakStep, dry_run: bool) -> FlowReport:
    """One row per check; the description says the overall status, the streaks and the actions."""
    table = [
        {
            "component": check.component,
            "measurement": check.measurement,
            "status": check.status.value,
            "observed": _observed(check),
            "latency_ms": round(check.latency_ms, 1),
            "message": check.message,
        }
        for check in report.checks
    ]
    statuses = report.by_component()
    failing = sorted(c for c, s in statuses.items() if s is Status.UNHEALTHY)
    streaks = {
        c: o.state.consecutive_failures
        for c, o in step.outcomes.items()
        if o.state.consecutive_failures
    }
    lines = [f"Health **{report.status.value}** at {report.time.isoformat(timespec='seconds')}"]
    if dry_run:
        lines.append("Dry run: no event recorded, no streak counted, no heal started.")
    if failing:
        lines.append("Failing: " + ", ".join(failing) + ".")
    if streaks:
        lines.append(
            "Consecutive failures: " + ", ".join(f"{c} {n}" for c, n in sorted(streaks.items()))
        )
    if step.offline:
        lines.append(f"Database unreachable: streaks kept in the Variable {STREAKS_VARIABLE}.")
    for record in step.merged:
        lines.append(f"Incident {record.id} ({record.component}) written after the outage.")
    for component, action in sorted(step.actions.items()):
        lines.append(f"{component}: {action}")
    description = "\n\n".join(lines)
    return FlowReport(
        artifact_key=ARTIFACT_KEY,
        table=table,
        description=description,
        log=" | ".join(line.replace("**", "") for line in lines),
        result={
            "status": report.status.value,
            "time": report.time.astimezone(UTC).isoformat(),
            "dry_run": dry_run,
            "components": {c: s.value for c, s in statuses.items()},
            "streaks": streaks,
            "offline": step.offline,
            "merged_incidents": [record.id for record in step.merged],
            "actions": step.actions,
            "checks": table,
        },
    )


def _observed(check: CheckResult) -> str:
    if check.observed_value is None:
        return "-"
    return f"{check.observed_value} {check.observed_unit}".strip()
