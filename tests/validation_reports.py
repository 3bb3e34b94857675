"""A production-validation report made from statuses alone, for tests of what reads reports."""

from __future__ import annotations

from datetime import UTC, datetime

from m1lib.ops.validation.scenario import Context, Outcome, Result, Scenario, Status
from m1lib.ops.validation.suite import SuiteReport


def _answer(outcome: Outcome) -> Scenario:
    def run(_context: Context) -> Outcome:
        return outcome

    return Scenario("", "", "", run)


def make_report(*found: Status, group: str = "api", profile: str = "local") -> SuiteReport:
    """One scenario ``<group>.s<i>`` per status, each observed ``<i> ms`` against ``<= 9 ms``."""
    results = []
    for i, status in enumerate(found):
        outcome = Outcome(status, f"{i} ms", "<= 9 ms", "m")
        scenario = Scenario(f"{group}.s{i}", group, f"s{i}", _answer(outcome).run)
        results.append(Result(scenario, outcome, 1.0))
    return SuiteReport(
        target={"profile": profile, "apiUrl": "https://m1.example"},
        slo_source="m1lib/ops/validation/slo.yaml",
        started_at=datetime(2026, 12, 3, tzinfo=UTC),
        results=tuple(results),
    )
