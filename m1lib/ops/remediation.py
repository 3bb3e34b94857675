"""What self-healing does per component, and doing one step of it: command, acks, re-check.

A plan is data (:func:`plan`): the control commands to issue, in order, for a failing component.
:class:`Remediator` runs one step: it issues the command through the control channel, waits
(bounded) for every live replica's ack, then re-runs the component's own check until it passes or
``M1_HEALING_VERIFY_S`` runs out. The self-heal flow (flows/self_heal.py) walks the plan and stops at
the first step that verifies. No Prefect here, so the steps are tested without a flow run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from m1lib import control
from m1lib.errors import InputError
from m1lib.ops.checks import HealthChecker
from m1lib.ops.report import COMPONENTS, CheckResult, Status, runbook, worst
from m1lib.settings import Settings

if TYPE_CHECKING:
    from m1lib.db.session import Database

__all__ = [
    "BACK_TO_REDIS",
    "CREATED_BY",
    "AckSummary",
    "Remediator",
    "Step",
    "StepOutcome",
    "check_component",
    "plan",
]

CREATED_BY: Final = "self-heal"
_VERIFY_PERIOD_S = 0.5  # between two re-runs of a check while verifying
# A step that acts at once (a pool reset) is verified this long at most (or M1_HEALING_VERIFY_S if
# shorter): Redis still refusing the flow's own PING then is not a pool's fault, and the next step
# (the memory fallback) should not wait the whole window behind it.
_QUICK_VERIFY_S = 3.0
_ACK_PERIOD_S = 0.2  # between two reads of a command's acks


@dataclass(frozen=True, slots=True)
class Step:
    """One remediation step: a control command (None: nothing to order, only verify)."""

    name: str  # what the incident's action says
    command: str | None
    args: dict[str, Any] = field(default_factory=dict)
    why: str = ""
    mitigation: bool = False  # keeps M1 serving while the component stays down (not a cure)
    escalate_if_failing: bool = False  # nothing M1 can do: tell a person with the runbook
    expect: str | None = None  # healed only if every replica's ack detail contains this
    quick: bool = False  # takes effect at once: verify at most _QUICK_VERIFY_S, then move on


_SUPERVISED = (
    "under `m1 up` the supervisor restarts a child process that died, with backoff; the flow "
    "cannot restart processes, so it verifies and escalates with the runbook"
)

_PLANS: Final[dict[str, tuple[Step, ...]]] = {
    "redis": (
        Step(
            "reset-redis-pools",
            "cache.reset_pool",
            why="drop dead pooled sockets; an open breaker probes Redis at once",
            quick=True,
        ),
        Step(
            "cache-to-memory",
            "cache.set_backend",
            {"backend": "memory"},
            why="Redis still fails: pin every replica's cache to its memory fallback",
            mitigation=True,
        ),
    ),
    "database": (
        Step(
            "verify-database-recovery",
            None,
            why="replicas dispose their pools and reconnect by themselves (the control channel "
            "lives in the database, so it cannot carry this order); wait with backoff, bounded",
        ),
    ),
    "policy_engine": (
        Step("reload-policy", "policy.reload", why="reload the tool registry and policy caches"),
    ),
    "memory": (
        Step(
            "relieve-memory",
            "memory.relieve",
            why="evict caches, drop purged revocations, collect garbage",
        ),
    ),
    "revocation_sync": (
        Step("resync-revocations", "revocation.resync", why="force a full revocation reload"),
    ),
    "event_store": (
        Step(
            "resync-event-stream",
            "metrics.resync",
            why="restart a dead stream consumer and catch up with the shared stream",
        ),
    ),
    "api": (Step("verify-api", None, why=_SUPERVISED, escalate_if_failing=True),),
    "prefect": (Step("verify-prefect", None, why=_SUPERVISED, escalate_if_failing=True),),
}

# Redis back while replicas still sit on a pinned memory cache: unpin (automatic, probes at once).
BACK_TO_REDIS: Final = Step(
    "cache-back-to-redis",
    "cache.set_backend",
    {"backend": None},
    why="Redis answers again: every replica leaves the memory fallback (stale keys dropped first)",
    expect="now redis",
)


def check_component(component: str) -> str:
    """``component`` if M1 heals it; else InputError naming the allowed ones."""
    if not isinstance(component, str) or component not in COMPONENTS:
        raise InputError(
            "component", f"{str(component)[:80]!r} is not a component", list(COMPONENTS)
        )
    return component


def plan(component: str) -> tuple[Step, ...]:
    """The steps for a failing ``component``, in order (the flow stops at the first that heals)."""
    return _PLANS[check_component(component)]


@dataclass(frozen=True, slots=True)
class AckSummary:
    """Who applied a command: ok and failed replica ids (with details), and the silent ones."""

    command_id: int | None
    ok: dict[str, str]
    failed: dict[str, str]
    missing: list[str]

    @property
    def text(self) -> str:
        if self.command_id is None:
            return "no command"
        parts = [f"command {self.command_id}: {len(self.ok)} ok"]
        if self.failed:
            shown = "; ".join(f"{k}: {v}" for k, v in sorted(self.failed.items())[:3])
            parts.append(f"{len(self.failed)} failed ({shown})")
        if self.missing:
            parts.append(f"no ack from {', '.join(self.missing[:5])}")
        if self.ok:
            first = sorted(self.ok.items())[0]
            parts.append(f"{first[0]}: {first[1]}")
        return "; ".join(parts)


@dataclass(frozen=True, slots=True)
class StepOutcome:
    """What one step did and what the check said after it."""

    step: str
    command: str | None
    outcome: str  # healed | mitigated | failed | escalated | planned | suppressed
    status: str  # the component's worst status after the step ("" when not checked)
    acks: str
    check: str  # the failing (or passing) checks' messages after the step
    seconds: float

    @property
    def healed(self) -> bool:
        return self.outcome == "healed"

    def detail(self) -> str:
        return f"{self.acks}; check {self.status}: {self.check}"[:2000]

    def row(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "command": self.command or "-",
            "outcome": self.outcome,
            "status": self.status or "-",
            "acks": self.acks,
            "check": self.check,
            "seconds": round(self.seconds, 2),
        }


def _summary(results: list[CheckResult]) -> tuple[Status, str]:
    status = worst(result.status for result in results)
    shown = [r for r in results if r.status is not Status.HEALTHY] or results
    return status, " | ".join(f"{r.key}: {r.message}" for r in shown)[:1000]


class Remediator:
    """Runs remediation steps of one component against the live replicas.

    >>> remediator = Remediator(settings, db=db, checker=checker)
    >>> remediator.run(plan("memory")[0], "memory")
    """

    def __init__(
        self,
        settings: Settings,
        *,
        db: Database,
        checker: HealthChecker,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self.db = db
        self.checker = checker
        self._sleep = sleep
        self.last_check = ""  # the messages of the last check run

    def check(self, component: str) -> tuple[Status, str]:
        """The component's worst status now and its messages."""
        return _summary(self.checker.checks()[check_component(component)]())

    def live_replica_ids(self) -> list[str]:
        within = 3 * self.settings.replica.heartbeat_s
        return [replica.id for replica in control.live_replicas(self.db, within)]

    def replicas_on_memory(self) -> list[str]:
        """Live replicas whose last heartbeat says their cache is on memory."""
        within = 3 * self.settings.replica.heartbeat_s
        return [r.id for r in control.live_replicas(self.db, within) if r.cache_backend == "memory"]

    def issue(self, step: Step) -> AckSummary:
        """Issue the step's command and wait, at most ``M1_HEALING_ACK_TIMEOUT_S``, for every
        replica live when it was issued to ack it."""
        if step.command is None:
            return AckSummary(None, {}, {}, [])
        live = self.live_replica_ids()
        command_id = control.issue_command(
            self.db, step.command, step.args, created_by=CREATED_BY, settings=self.settings
        )
        deadline = time.monotonic() + self.settings.healing.ack_timeout_s
        while True:
            acks = {ack.replica_id: ack for ack in control.acks_for(self.db, command_id)}
            missing = [replica for replica in live if replica not in acks]
            if not missing or time.monotonic() >= deadline:
                break
            self._sleep(_ACK_PERIOD_S)
        return AckSummary(
            command_id,
            {k: a.detail for k, a in acks.items() if a.ok},
            {k: a.detail for k, a in acks.items() if not a.ok},
            missing,
        )

    def verify(self, component: str, within_s: float, *, backoff: bool = False) -> Status:
        """Re-run the check until it is not unhealthy or ``within_s`` passed; the last status.
        With ``backoff`` the pause doubles each time (the database: do not hammer it)."""
        deadline = time.monotonic() + within_s
        pause = _VERIFY_PERIOD_S
        while True:
            status, self.last_check = self.check(component)
            if not status.failing or time.monotonic() + pause > deadline:
                return status
            self._sleep(pause)
            if backoff:
                pause = min(pause * 2, 10.0)

    def run(self, step: Step, component: str) -> StepOutcome:
        """Issue, wait for acks, verify; the outcome the incident records."""
        started = time.monotonic()
        acks = self.issue(step)
        if step.command is None and component == "database":
            status = self.verify(component, self.settings.healing.database_wait_s, backoff=True)
        else:
            within = self.settings.healing.verify_s
            status = self.verify(component, min(within, _QUICK_VERIFY_S) if step.quick else within)
        confirmed = step.expect is None or (
            not acks.failed and all(step.expect in detail for detail in acks.ok.values())
        )
        if not status.failing and confirmed:
            outcome = "healed"  # failed acks, if any, are in the detail
        elif step.mitigation and acks.ok and not acks.failed:
            outcome = "mitigated"
        elif step.escalate_if_failing:
            outcome = "escalated"
        else:
            outcome = "failed"
        return StepOutcome(
            step=step.name,
            command=step.command,
            outcome=outcome,
            status=status.value,
            acks=acks.text,
            check=self.last_check,
            seconds=time.monotonic() - started,
        )

    @staticmethod
    def runbook(component: str) -> str:
        return runbook(component)
