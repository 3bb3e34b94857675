"""Each component's run of consecutive failing checks, and what the healing rule makes of it.

Prefect's automations count failures in a window, not in a row, so M1 keeps the streak itself:
one ``health_streaks`` row per component, advanced by every health report. Two layers:

- :func:`step` and :func:`advance` are pure: a streak, a status, a clock and the policy in, the new
  streak and a :class:`HealingDecision` out. The rule lives here, tested without a database; the
  health flow uses the same functions on the copy it keeps in a Prefect Variable while the
  database is unreachable.
- :func:`record_report` applies a report in one transaction: it inserts the missing rows, then
  locks every row it reads (``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite takes its single write
  lock with that first insert), so a second health run waits and then sees the first one's
  count. A report not newer than the last one counted (by ``min_interval_s``) counts nothing:
  two runs checking the same moment extend a streak once.

The rule: a failing check (:attr:`Status.failing`) extends the streak, anything else ends it and
resolves the component's open incident. At ``threshold`` failures in a row the component is
healed, and again while the streak lasts at most once per ``cooldown_s``; when ``max_attempts``
heals of one streak did not help, the next due heal escalates instead (once per streak). A
paused component (``m1 healing pause``) is still counted, its due heals are ``suppressed``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Self

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from m1lib.db.models import HealingOverride, HealthStreak
from m1lib.db.session import Database
from m1lib.db.upsert import upsert
from m1lib.errors import InputError
from m1lib.ops import incidents
from m1lib.ops.report import COMPONENTS, HealthReport, Status
from m1lib.settings import Settings

__all__ = [
    "ALL_COMPONENTS",
    "Action",
    "HealingDecision",
    "HealingPolicy",
    "Outcome",
    "StreakState",
    "advance",
    "load_states",
    "merge_offline",
    "overrides",
    "pause",
    "paused_by",
    "record_report",
    "resume",
    "step",
]

ALL_COMPONENTS = "*"  # an override of every component


class Action(StrEnum):
    """What the health flow does for a component after this check."""

    NOTHING = "nothing"
    HEAL = "heal"  # start the self-heal flow for it
    ESCALATE = "escalate"  # heals did not help: tell a person
    SUPPRESSED = "suppressed"  # a heal or escalation was due, but a person paused healing


@dataclass(frozen=True, slots=True)
class HealingDecision:
    action: Action
    reason: str
    suppressed_by: str | None = None


@dataclass(frozen=True, slots=True)
class HealingPolicy:
    """The rule's numbers; ``min_interval_s`` is how far apart two reports must be to both count."""

    threshold: int = 3
    cooldown_s: float = 300.0
    max_attempts: int = 3
    min_interval_s: float = 0.0

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        """Reports closer than half a health period are one round (two runs, one moment)."""
        return cls(
            threshold=settings.healing.threshold,
            cooldown_s=settings.healing.cooldown_s,
            max_attempts=settings.healing.max_attempts,
            min_interval_s=settings.health.period_s / 2,
        )


def _time(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value).astimezone(UTC)


@dataclass(frozen=True, slots=True)
class StreakState:
    """One component's streak; JSON-serialisable so a flow can keep it while the database is away."""

    component: str
    consecutive_failures: int = 0
    last_status: Status | None = None
    last_checked_at: datetime | None = None
    streak_started_at: datetime | None = None
    heals_in_streak: int = 0
    last_heal_at: datetime | None = None
    escalated_at: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = asdict(self)
        for name, value in out.items():
            if isinstance(value, datetime):
                out[name] = value.astimezone(UTC).isoformat()
        out["last_status"] = None if self.last_status is None else self.last_status.value
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | str) -> Self:
        """The state :meth:`to_json` wrote (a dict, or its JSON text); InputError if it is none."""
        try:
            raw = json.loads(data) if isinstance(data, str) else dict(data)
            return cls(
                component=str(raw["component"]),
                consecutive_failures=int(raw.get("consecutive_failures", 0)),
                last_status=None if raw.get("last_status") is None else Status(raw["last_status"]),
                last_checked_at=_time(raw.get("last_checked_at")),
                streak_started_at=_time(raw.get("streak_started_at")),
                heals_in_streak=int(raw.get("heals_in_streak", 0)),
                last_heal_at=_time(raw.get("last_heal_at")),
                escalated_at=_time(raw.get("escalated_at")),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise InputError("streak", f"is not a saved streak state ({error})") from None

    @classmethod
    def from_row(cls, row: HealthStreak) -> Self:
        return cls(
            component=row.component,
            consecutive_failures=row.consecutive_failures,
            last_status=None if row.last_status is None else Status(row.last_status),
            last_checked_at=row.last_checked_at,
            streak_started_at=row.streak_started_at,
            heals_in_streak=row.heals_in_streak,
            last_heal_at=row.last_heal_at,
            escalated_at=row.escalated_at,
        )

    def columns(self) -> dict[str, Any]:
        """The row's columns but the key, as :func:`record_report` writes them."""
        return {
            "consecutive_failures": self.consecutive_failures,
            "last_status": None if self.last_status is None else self.last_status.value,
            "last_checked_at": self.last_checked_at,
            "streak_started_at": self.streak_started_at,
            "heals_in_streak": self.heals_in_streak,
            "last_heal_at": self.last_heal_at,
            "escalated_at": self.escalated_at,
        }


@dataclass(frozen=True, slots=True)
class Outcome:
    """A component after one report: its new streak and what to do. ``counted`` is False for a
    report that was not newer than the last one counted (it changed nothing)."""

    state: StreakState
    decision: HealingDecision
    counted: bool = True
    previous: StreakState | None = field(default=None, repr=False)

    @property
    def ended_streak(self) -> bool:
        """This check passed after failures: the component's open incident resolves."""
        return (
            self.counted
            and self.previous is not None
            and self.previous.consecutive_failures > 0
            and self.state.consecutive_failures == 0
        )


_NOTHING = HealingDecision(Action.NOTHING, "")


def step(
    state: StreakState,
    status: Status,
    now: datetime,
    policy: HealingPolicy,
    *,
    paused_by: str | None = None,
) -> Outcome:
    """The healing rule for one component and one check at ``now`` (pure)."""
    last = state.last_checked_at
    if last is not None and (now - last).total_seconds() < policy.min_interval_s:
        reason = f"a check at {last.isoformat()} was counted already"
        return Outcome(state, HealingDecision(Action.NOTHING, reason), counted=False)
    if not status.failing:
        new = StreakState(
            state.component, 0, status, now, None, 0, state.last_heal_at, escalated_at=None
        )
        return Outcome(new, _NOTHING, previous=state)
    count = state.consecutive_failures + 1
    new = replace(
        state,
        consecutive_failures=count,
        last_status=status,
        last_checked_at=now,
        streak_started_at=state.streak_started_at if state.consecutive_failures else now,
    )
    if count < policy.threshold or new.escalated_at is not None:
        return Outcome(new, _NOTHING, previous=state)
    since_heal = None if new.last_heal_at is None else (now - new.last_heal_at).total_seconds()
    if since_heal is not None and since_heal < policy.cooldown_s:
        wait = policy.cooldown_s - since_heal
        return Outcome(
            new, HealingDecision(Action.NOTHING, f"cooldown: {wait:.0f} s left"), previous=state
        )
    if new.heals_in_streak >= policy.max_attempts:
        due = HealingDecision(
            Action.ESCALATE,
            f"{new.heals_in_streak} heals did not end {count} consecutive failures",
        )
    else:
        due = HealingDecision(Action.HEAL, f"{count} consecutive failures")
    if paused_by is not None:
        reason = f"{due.action.value} due ({due.reason}), healing paused by {paused_by}"
        return Outcome(
            new, HealingDecision(Action.SUPPRESSED, reason, suppressed_by=paused_by), previous=state
        )
    if due.action is Action.HEAL:
        new = replace(new, heals_in_streak=new.heals_in_streak + 1, last_heal_at=now)
    else:
        new = replace(new, escalated_at=now)
    return Outcome(new, due, previous=state)


def advance(
    states: Mapping[str, StreakState],
    statuses: Mapping[str, Status],
    now: datetime,
    policy: HealingPolicy,
    *,
    paused: Callable[[str], str | None] = lambda _component: None,
) -> dict[str, Outcome]:
    """:func:`step` for each component of ``statuses``; a component without a state starts one."""
    return {
        component: step(
            states.get(component) or StreakState(component),
            status,
            now,
            policy,
            paused_by=paused(component),
        )
        for component, status in sorted(statuses.items())
    }


# -- the database layer --------------------------------------------------------------------------


def _check_component(component: str, *, allow_all: bool = False) -> str:
    allowed = [*COMPONENTS, ALL_COMPONENTS] if allow_all else list(COMPONENTS)
    if component not in allowed:
        raise InputError("component", f"{component[:80]!r} is not a component", allowed)
    return component


def _locked_states(
    session: Session, components: Iterable[str], now: datetime
) -> dict[str, StreakState]:
    """Insert the missing rows, then read every row locked until the transaction ends."""
    names = sorted(set(components))
    if not names:
        return {}
    table = HealthStreak.__table__
    rows = [
        {"component": name, "consecutive_failures": 0, "heals_in_streak": 0, "updated_at": now}
        for name in names
    ]
    session.execute(upsert(session.get_bind().dialect, table, rows, ["component"]))  # type: ignore[arg-type]
    found = session.scalars(
        select(HealthStreak)
        .where(HealthStreak.component.in_(names))
        .order_by(HealthStreak.component)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return {row.component: StreakState.from_row(row) for row in found}


def _write_state(session: Session, state: StreakState, now: datetime) -> None:
    session.execute(
        update(HealthStreak)
        .where(HealthStreak.component == state.component)
        .values(**state.columns(), updated_at=now)
    )


def uncount_heal(db: Database, outcome: Outcome) -> bool:
    """Take back the heal ``outcome`` counted when the trigger did not start it (a self-heal of
    that component was still running): escalation counts heals that ran, not heals decided.
    Only while the row still holds that count (a later check's write wins); True when taken back."""
    state, previous = outcome.state, outcome.previous
    if previous is None or outcome.decision.action is not Action.HEAL:
        return False
    with db.transaction() as session:
        done = session.execute(
            update(HealthStreak)
            .where(
                HealthStreak.component == state.component,
                HealthStreak.heals_in_streak == state.heals_in_streak,
            )
            .values(heals_in_streak=previous.heals_in_streak, last_heal_at=previous.last_heal_at)
        )
        return bool(getattr(done, "rowcount", 0))


def _paused_lookup(session: Session) -> Callable[[str], str | None]:
    paused = {
        row.component: row.by
        for row in session.scalars(select(HealingOverride).where(HealingOverride.paused))
    }
    return lambda component: paused.get(component) or paused.get(ALL_COMPONENTS)


def record_report(
    db: Database,
    report: HealthReport,
    policy: HealingPolicy,
    *,
    now: datetime | None = None,
    escalate: Callable[[incidents.IncidentRecord], None] | None = None,
) -> dict[str, Outcome]:
    """Count ``report`` into the streaks, open and resolve incidents; the decision per component.

    One transaction: two health runs at once are serialised by the row locks, and the second
    finds the first's check counted (``counted`` False). A due heal or escalation opens the
    component's incident (or appends to the open one); a passing check resolves it. Escalations
    are sent by ``escalate`` (default :func:`incidents.escalate` with the database's settings)
    after the transaction committed: a webhook never holds a row lock.
    """
    at = now or report.time
    statuses = report.by_component()
    for component in statuses:
        _check_component(component)
    escalated: list[incidents.IncidentRecord] = []
    with db.transaction() as session:
        states = _locked_states(session, statuses, at)
        outcomes = advance(states, statuses, at, policy, paused=_paused_lookup(session))
        for component, outcome in outcomes.items():
            if not outcome.counted:
                continue
            _write_state(session, outcome.state, at)
            if not statuses[component].failing:  # any pass ends an unresolved incident
                incidents.resolve(session, component, at)
            record = _apply_decision(session, report, outcome, at)
            if record is not None:
                escalated.append(record)
    send = escalate or (lambda record: incidents.escalate(record, db.settings))
    for record in escalated:
        send(record)
    return outcomes


def _apply_decision(
    session: Session, report: HealthReport, outcome: Outcome, at: datetime
) -> incidents.IncidentRecord | None:
    """Write the decision into the component's incident; the incident if it escalated."""
    decision = outcome.decision
    if decision.action is Action.NOTHING:
        return None
    component = outcome.state.component
    checks = [check.health_json() for check in report.checks if check.component == component]
    messages = "; ".join(check.message for check in report.checks if check.component == component)
    row = incidents.open_or_current(
        session,
        component,
        kind="consecutive_failures",
        trigger=f"{outcome.state.consecutive_failures} consecutive failing checks: {messages}",
        started_at=outcome.state.streak_started_at or at,
        last_check={"checks": checks},
    )
    if decision.action is Action.HEAL:
        incidents.add_action(row, "heal", "requested", decision.reason, at)
    elif decision.action is Action.SUPPRESSED:
        last = (row.actions or [{}])[-1]
        if row.suppressed_by != decision.suppressed_by or last.get("action") != "suppressed":
            incidents.add_action(row, "suppressed", "skipped", decision.reason, at)
        row.suppressed_by = decision.suppressed_by
    else:
        incidents.mark_escalated(row, decision.reason, at)
        session.flush()
        return incidents.IncidentRecord.from_row(row)
    return None


def load_states(db: Database) -> dict[str, StreakState]:
    """Every component's streak as the database holds it (no lock: for reading)."""
    with db.transaction() as session:
        return {
            row.component: StreakState.from_row(row)
            for row in session.scalars(select(HealthStreak))
        }


def merge_offline(
    db: Database,
    pending: Iterable[StreakState],
    policy: HealingPolicy | None = None,
    *,
    now: datetime | None = None,
) -> list[incidents.IncidentRecord]:
    """Write the streaks a flow kept while the database was unreachable, and their incidents.

    A kept state newer than the row (``last_checked_at``) replaces it; an older one is dropped
    (another run counted since). A kept streak at or past the threshold opens its component's
    incident (the database's own outage, typically) with the streak's start as its start, when
    none is open. ``policy`` defaults to the settings'. Returns the incidents opened.
    """
    at = now or datetime.now(UTC)
    threshold = (policy or HealingPolicy.from_settings(db.settings)).threshold
    kept = {state.component: state for state in pending}
    for component in kept:
        _check_component(component)
    opened: list[incidents.IncidentRecord] = []
    with db.transaction() as session:
        states = _locked_states(session, kept, at)
        for component, state in sorted(kept.items()):
            current = states[component]
            if state.last_checked_at is None or (
                current.last_checked_at is not None
                and state.last_checked_at <= current.last_checked_at
            ):
                continue
            _write_state(session, state, at)
            if state.consecutive_failures < threshold:
                continue
            if incidents.current(session, component) is not None:
                continue
            row = incidents.open_or_current(
                session,
                component,
                kind="outage_offline",
                trigger=(
                    f"{state.consecutive_failures} consecutive failing checks while the "
                    "database was unreachable (kept by the health flow, written on its return)"
                ),
                started_at=state.streak_started_at or at,
                last_check={"lastStatus": state.last_status.value if state.last_status else None},
            )
            incidents.add_action(
                row, "recorded_after_outage", "recorded", f"written at {at.isoformat()}", at
            )
            session.flush()
            opened.append(incidents.IncidentRecord.from_row(row))
    return opened


# -- manual override -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OverrideRecord:
    component: str
    paused: bool
    by: str
    at: datetime
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {
            "component": self.component,
            "paused": self.paused,
            "by": self.by,
            "at": self.at.isoformat(),
            "reason": self.reason,
        }


def _set_override(
    db: Database, component: str | None, paused: bool, by: str, reason: str
) -> list[OverrideRecord]:
    target = _check_component(component or ALL_COMPONENTS, allow_all=True)
    at = datetime.now(UTC)
    with db.transaction() as session:
        if not paused and target == ALL_COMPONENTS:  # resume all: every pause ends
            session.execute(
                update(HealingOverride)
                .where(HealingOverride.paused)
                .values(paused=False, by=by, at=at, reason=reason)
            )
        values = {"component": target, "paused": paused, "by": by, "at": at, "reason": reason}
        table = HealingOverride.__table__
        session.execute(
            upsert(
                session.get_bind().dialect,
                table,  # type: ignore[arg-type]
                values,
                ["component"],
                ["paused", "by", "at", "reason"],
            )
        )
    return overrides(db)


def pause(db: Database, component: str | None, by: str, reason: str = "") -> list[OverrideRecord]:
    """Pause healing of ``component`` (None: all); checks go on, due actions are suppressed."""
    return _set_override(db, component, True, by, reason)


def resume(db: Database, component: str | None, by: str, reason: str = "") -> list[OverrideRecord]:
    """Resume ``component`` (None: every pause ends, the global one and each component's)."""
    return _set_override(db, component, False, by, reason)


def overrides(db: Database) -> list[OverrideRecord]:
    """Every override row, paused or resumed, by component."""
    with db.transaction() as session:
        rows = session.scalars(select(HealingOverride).order_by(HealingOverride.component))
        return [OverrideRecord(r.component, r.paused, r.by, r.at, r.reason) for r in rows]


def paused_by(db: Database, component: str) -> str | None:
    """Who paused ``component``'s healing (its own pause, else the global one); None: not paused."""
    _check_component(component)
    with db.transaction() as session:
        return _paused_lookup(session)(component)
