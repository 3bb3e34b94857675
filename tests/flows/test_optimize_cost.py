"""The optimize-cost flow: the report under Prefect (markdown and table artifacts), alerts once per
period when applied, nothing raised or written on a dry run; its parameters, deployment and pure
report. The arithmetic is tested in tests/m1lib/ops/test_cost_*.py."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import func, select

from deployments.prefect_yaml import load_deployment_specs
from flows.optimize_cost import ARTIFACT_KEY, OptimizeCostParams, cost_report, optimize_cost
from m1lib.db.migrate import upgrade
from m1lib.db.models import CostBudgetAlert
from m1lib.db.session import Database
from m1lib.metrics import MetricsRuntime, install_default
from m1lib.ops.cost.analysis import Periods, analyse
from m1lib.ops.cost.budgets import BudgetStatus, Level, RaisedAlert
from m1lib.ops.cost.report import CostReport
from m1lib.settings import get_settings
from tasks.cost import raise_budget_alerts, read_spend
from tasks.retry import is_transient
from tests.flow_runs import FlowRun
from tests.m1lib.ops.cost_factories import cell


@pytest.fixture
def spend(task_settings: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[MetricsRuntime]:
    """A migrated database, a daily budget of $1 and a monthly one of $1,000, and $1.50 spent
    today (opus, web_search) in this process's default runtime, which the flow's queries read."""
    monkeypatch.setenv("M1_COST_BUDGET_DAILY_USD", "1")
    monkeypatch.setenv("M1_COST_BUDGET_MONTHLY_USD", "1000")
    get_settings.cache_clear()
    with Database(get_settings()) as db:
        upgrade(db)
    runtime = MetricsRuntime(get_settings(), replica_id="test")
    runtime.start()
    previous = install_default(runtime)
    now = datetime.now(UTC)
    at = max(now - timedelta(minutes=1), now.replace(hour=0, minute=0, second=0, microsecond=0))
    runtime.record_events(
        {"metric": "cost_updates", "timestamp": at, "model": "claude-opus-4-5",
         "toolName": "web_search", "component": "agent", "inputTokens": 100_000,
         "outputTokens": 10_000, "costUsd": 0.75}
        for _ in range(2)
    )  # fmt: skip
    assert runtime.flush()
    yield runtime
    install_default(previous)
    runtime.close()


def budget_alerts(runtime: MetricsRuntime) -> list[dict[str, Any]]:
    assert runtime.flush()
    query = {"metric": "error_alerts", "timeRange": "1h", "groupBy": ["level", "source"]}
    return runtime.run_query(query).rows


def alert_rows() -> int:
    with Database(get_settings()) as db, db.transaction() as session:
        return int(session.scalar(select(func.count()).select_from(CostBudgetAlert)) or 0)


def test_a_dry_run_reports_and_raises_or_writes_nothing(
    spend: MetricsRuntime, run_flow: Callable[..., FlowRun]
) -> None:
    run = run_flow(optimize_cost, OptimizeCostParams(dry_run=True))
    assert (run.result["dryRun"], run.result["alertsRaised"]) == (True, None)
    assert run.result["todayUsd"] == "1.500000"
    day = next(b for b in run.result["budgets"] if b["period"] == "day")
    assert day["crossed"] == ["soft", "hard"]  # crossed, yet nothing raised
    assert budget_alerts(spend) == []
    assert alert_rows() == 0
    assert "dry run: no alert raised" in run.description(ARTIFACT_KEY)
    markdown = run.artifacts[f"{ARTIFACT_KEY}-report"].data
    assert "# Cost report" in markdown
    assert "Dry run: no alert raised, nothing written." in markdown
    assert {"breakdown": "model", "name": "claude-opus-4-5"}.items() <= run.table(ARTIFACT_KEY)[
        0
    ].items()


def test_a_run_raises_each_crossed_level_once_and_the_next_run_none(
    spend: MetricsRuntime, run_flow: Callable[..., FlowRun]
) -> None:
    run = run_flow(optimize_cost)
    assert [(a["period"], a["level"]) for a in run.result["alertsRaised"]] == [
        ("day", "soft"), ("day", "hard")
    ]  # fmt: skip
    assert budget_alerts(spend) == [
        {"level": "critical", "source": "cost-budget", "count": 1},
        {"level": "warning", "source": "cost-budget", "count": 1},
    ]
    assert alert_rows() == 2
    again = run_flow(optimize_cost)
    assert again.result["alertsRaised"] == []
    assert alert_rows() == 2
    assert "0 budget alerts raised" in again.description(ARTIFACT_KEY)


def test_io_tasks_retry_only_transient_failures() -> None:
    for io_task in (read_spend, raise_budget_alerts):
        assert (io_task.retries, io_task.retry_condition_fn) == (3, is_transient)


def test_parameters_are_bounded_and_described() -> None:
    params = OptimizeCostParams()
    assert (params.dry_run, params.lookback_days, params.top, params.switch_share) == (
        False, 7, 10, 0.5
    )  # fmt: skip
    for bad in ({"lookback_days": 0}, {"lookback_days": 61}, {"top": 0}, {"switch_share": 0}):
        with pytest.raises(ValidationError):
            OptimizeCostParams(**bad)
    assert all(field.description for field in OptimizeCostParams.model_fields.values())
    assert optimize_cost.name == "optimize-cost"


def test_optimize_cost_is_deployed_hourly_never_overlapping() -> None:
    spec = {s.name: s for s in load_deployment_specs()}["optimize-cost"]
    assert spec.entrypoint == "flows.optimize_cost.optimize_cost"
    assert [(s.cron, s.timezone) for s in spec.schedules] == [("12 * * * *", "UTC")]
    assert (spec.concurrency_limit, spec.collision_strategy) == (1, "CANCEL_NEW")


def test_the_report_says_what_was_raised() -> None:
    now = datetime(2026, 12, 3, 15, tzinfo=UTC)
    analysis = analyse([cell(now - timedelta(hours=2), 2_500_000)], Periods(now, 7))
    start = analysis.periods.today_start
    status = BudgetStatus("day", start, 2_000_000, Fraction(4, 5), 2_500_000, None)
    raised = [RaisedAlert("day", status.period_start, Level.HARD, status.message(Level.HARD))]
    report = cost_report(CostReport(analysis, [status], [], raised))
    assert report.artifact_key == ARTIFACT_KEY
    assert report.description == (
        "Spend today $2.500000, month to date $2.500000, projected month $2.500000; "
        "1 budget alerts raised."
    )
    assert report.markdown is not None
    assert "- raised critical: daily cost budget reached: $2.500000 spent of $2.000000" in (
        report.markdown
    )
    assert report.result["alertsRaised"][0]["alertLevel"] == "critical"
