"""What a health check answers, and the report of all of them (RFC draft ``application/health+json``).

Every check (:mod:`m1lib.ops.checks`) returns a :class:`CheckResult`; ``run_full_health_check``
aggregates them worst-wins into a :class:`HealthReport`. The healing rule, the incidents, the
health flow's artifact and ``GET /api/m1/health`` all read these two types, nothing else.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final

__all__ = [
    "COMPONENTS",
    "RUNBOOK_BASE",
    "CheckResult",
    "HealthReport",
    "Status",
    "runbook",
    "worst",
]


class Status(StrEnum):
    """A component's state; ordered: a report is as bad as its worst check."""

    HEALTHY = "healthy"
    DEGRADED = "degraded"
    UNHEALTHY = "unhealthy"

    @property
    def rank(self) -> int:
        return _RANK[self]

    @property
    def health_json(self) -> str:
        """The health+json word: pass, warn or fail."""
        return _HEALTH_JSON[self]

    @property
    def failing(self) -> bool:
        """Whether this result extends a component's streak of consecutive failures."""
        return self is Status.UNHEALTHY


_RANK: Final = {Status.HEALTHY: 0, Status.DEGRADED: 1, Status.UNHEALTHY: 2}
_HEALTH_JSON: Final = {Status.HEALTHY: "pass", Status.DEGRADED: "warn", Status.UNHEALTHY: "fail"}

# The components M1 checks and heals; a check's ``component`` is one of these.
COMPONENTS: Final = (
    "database",
    "redis",
    "api",
    "memory",
    "prefect",
    "revocation_sync",
    "event_store",
    "policy_engine",
)

RUNBOOK_BASE: Final = "docs/runbooks"


def runbook(component: str) -> str:
    """Where the runbook of a component's incidents is (a path in the repository)."""
    return f"{RUNBOOK_BASE}/{component}.md"


def worst(statuses: Iterable[Status]) -> Status:
    """The worst of ``statuses``; healthy when there are none."""
    return max(statuses, key=lambda status: status.rank, default=Status.HEALTHY)


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One component's measurement at one moment.

    ``observed_value`` with ``observed_unit`` is what was measured (``ms``, ``percent``, ``s``,
    ``bytes``...); ``error_rate`` is the share of failures over the check's recent window
    (0..1), None where the component has no such window. ``message`` is one line for a person,
    never a secret (no URL with a password, no key); ``recommendations`` say what to do, the
    last one linking the runbook.
    """

    component: str
    measurement: str
    status: Status
    latency_ms: float
    observed_value: float | int | str | None
    observed_unit: str
    message: str
    error_rate: float | None = None
    recommendations: tuple[str, ...] = ()
    time: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def key(self) -> str:
        """The health+json key: ``component:measurement``."""
        return f"{self.component}:{self.measurement}"

    def health_json(self) -> dict[str, Any]:
        """One entry of a health+json ``checks`` list."""
        entry: dict[str, Any] = {
            "componentId": self.component,
            "observedValue": self.observed_value,
            "observedUnit": self.observed_unit,
            "status": self.status.health_json,
            "time": self.time.isoformat().replace("+00:00", "Z"),
            "output": self.message,
            "latencyMs": round(self.latency_ms, 3),
        }
        if self.error_rate is not None:
            entry["errorRate"] = round(self.error_rate, 4)
        if self.recommendations:
            entry["recommendations"] = list(self.recommendations)
        return entry


@dataclass(frozen=True, slots=True)
class HealthReport:
    """All checks of one run, the overall status the worst of them."""

    checks: tuple[CheckResult, ...]
    time: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def status(self) -> Status:
        return worst(check.status for check in self.checks)

    def by_component(self) -> Mapping[str, Status]:
        """Each component's worst status (a component may have several measurements)."""
        out: dict[str, Status] = {}
        for check in self.checks:
            out[check.component] = worst((out.get(check.component, Status.HEALTHY), check.status))
        return out

    def health_json(self, *, service_id: str = "m1") -> dict[str, Any]:
        """The report as ``application/health+json``: checks keyed ``component:measurement``."""
        checks: dict[str, list[dict[str, Any]]] = {}
        for check in self.checks:
            checks.setdefault(check.key, []).append(check.health_json())
        return {
            "status": self.status.health_json,
            "serviceId": service_id,
            "time": self.time.isoformat().replace("+00:00", "Z"),
            "checks": checks,
        }
