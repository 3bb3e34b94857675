"""Cost tasks: read spend through the query engine, and raise budget alerts once per period.

The analysis reads ``cost_updates`` with ``m1lib.metrics.run_query``: in a flow-run process that is
the forwarding runtime, which asks the API (``POST /api/m1/dashboard/query`` with M1_API_KEY), so
the figures are the replicas' events. Both I/O tasks retry on an outage only (``tasks.retry``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from prefect import task

from m1lib.metrics import run_query
from m1lib.ops.cost import budgets
from m1lib.ops.cost.analysis import CostAnalysis, fetch_analysis
from m1lib.ops.cost.budgets import BudgetPolicy, BudgetStatus, RaisedAlert
from m1lib.ops.cost.prices import default_prices
from m1lib.ops.cost.recommend import Recommendation, rates_of, recommend
from m1lib.settings import get_settings
from tasks.resources import database
from tasks.retry import io_task


@task(name="cost-analysis-time")
def analysis_time() -> datetime:
    """The one ``now`` the run's periods, budgets and alert rows are computed at."""
    return datetime.now(UTC)


@io_task("read-spend")
def read_spend(now: datetime, lookback_days: int, top: int, peak_k: float) -> CostAnalysis:
    """Hourly spend cells from the month's (or history's) start to ``now``, analysed."""
    return fetch_analysis(run_query, now, lookback_days=lookback_days, top=top, peak_k=peak_k)


@task(name="check-budgets")
def check_budgets(analysis: CostAnalysis) -> list[BudgetStatus]:
    """Each budget that is on (M1_COST_BUDGET_*) with the levels its period crossed."""
    return budgets.budget_statuses(analysis, BudgetPolicy.from_settings(get_settings()))


@io_task("raise-budget-alerts")
def raise_budget_alerts(statuses: Sequence[BudgetStatus], now: datetime) -> list[RaisedAlert]:
    """Raise each crossed level whose (period, level) row this run inserts; once per period."""
    with database() as db:
        return budgets.raise_budget_alerts(db, statuses, now=now)


@task(name="recommend-savings")
def recommend_savings(
    analysis: CostAnalysis, statuses: Sequence[BudgetStatus], switch_share: float
) -> list[Recommendation]:
    """Model switches and budget cuts, each saving computed from the history's cells."""
    rates = rates_of(default_prices())  # the table record_cost priced the events with
    return recommend(analysis, statuses, switch_share=switch_share, rates=rates)
