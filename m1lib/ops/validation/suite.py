"""The production-validation suite: every scenario, in group order, and the report they make.

:func:`run_suite` is what `m1 validate production` and the production-validation flow call;
:class:`SuiteReport` is the answer in every form they show it: table rows, a markdown summary,
JSON, and an exit status to gate a release on (0: no fail; 1: a fail, or with ``strict`` a warn).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from m1lib.ops.validation import (
    api_scenarios,
    config_scenarios,
    database_scenarios,
    performance_scenarios,
    redis_scenarios,
    security_scenarios,
)
from m1lib.ops.validation.scenario import Context, Result, Scenario, Status, run_scenarios, worst
from m1lib.ops.validation.slo import load_slo
from m1lib.ops.validation.target import Credentials, Target
from m1lib.settings import Settings

__all__ = ["GROUPS", "SCENARIOS", "SuiteReport", "open_context", "run_suite"]

SCENARIOS: Final[list[Scenario]] = [
    *config_scenarios.SCENARIOS,
    *database_scenarios.SCENARIOS,
    *redis_scenarios.SCENARIOS,
    *api_scenarios.SCENARIOS,
    *security_scenarios.SCENARIOS,
    *performance_scenarios.SCENARIOS,
]
GROUPS: Final = ("config", "database", "redis", "api", "security", "performance")


@dataclass(frozen=True)
class SuiteReport:
    """The results of one run, with the target as shown (no secret) and the SLO file used."""

    target: dict[str, Any]
    slo_source: str
    started_at: datetime
    results: tuple[Result, ...]

    @property
    def verdict(self) -> Status:
        return worst(result.outcome.status for result in self.results)

    def counts(self) -> dict[str, int]:
        found = Counter(result.outcome.status.value for result in self.results)
        return {status.value: found.get(status.value, 0) for status in Status}

    def rows(self) -> list[dict[str, Any]]:
        return [result.row() for result in self.results]

    def exit_status(self, *, strict: bool = False) -> int:
        """0 when no scenario failed (with ``strict``, none warned either), else 1."""
        failing = {Status.FAIL, Status.WARN} if strict else {Status.FAIL}
        return 1 if any(r.outcome.status in failing for r in self.results) else 0

    def by_id(self) -> dict[str, Result]:
        return {result.scenario.id: result for result in self.results}

    def markdown(self) -> str:
        counts = self.counts()
        lines = [
            f"# Production validation: **{self.verdict.value}**",
            "",
            f"Profile `{self.target['profile']}`, API {self.target['apiUrl']}, "
            f"{self.started_at.isoformat(timespec='seconds')}; SLO file {self.slo_source}.",
            "",
            f"{counts['pass']} pass, {counts['warn']} warn, {counts['fail']} fail "
            f"of {len(self.results)} scenarios.",
        ]
        attention = [r for r in self.results if r.outcome.status is not Status.PASS]
        if attention:
            lines += [
                "",
                "| scenario | status | observed | threshold | message |",
                "|---|---|---|---|---|",
            ]
            for result in attention:
                o = result.outcome
                cells = [result.scenario.id, o.status.value, o.observed, o.threshold, o.message]
                lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict.value,
            "exitStatus": self.exit_status(),
            "counts": self.counts(),
            "target": self.target,
            "sloFile": self.slo_source,
            "startedAt": self.started_at.astimezone(UTC).isoformat(),
            "scenarios": self.rows(),
        }


@contextmanager
def open_context(target: Target, credentials: Credentials, settings: Settings) -> Iterator[Context]:
    """The context scenarios share; its probes cleaned up and handles closed at exit."""
    context = Context(
        target=target.resolved(settings),
        credentials=credentials,
        settings=settings,
        slo=load_slo(settings),
    )
    try:
        yield context
    finally:
        context.close()


def run_suite(
    target: Target,
    credentials: Credentials,
    settings: Settings,
    *,
    scenarios: Sequence[Scenario] = SCENARIOS,
) -> SuiteReport:
    """Run ``scenarios`` against ``target``; never raises for what it finds (a bad SLO file
    raises ``SettingsError`` before anything runs)."""
    started = datetime.now(UTC)
    with open_context(target, credentials, settings) as context:
        results = run_scenarios(scenarios, context)
    return report_of(context, started, results)


def report_of(context: Context, started: datetime, results: Sequence[Result]) -> SuiteReport:
    return SuiteReport(
        target=context.target.shown(),
        slo_source=context.slo.source,
        started_at=started,
        results=tuple(results),
    )
