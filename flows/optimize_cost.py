"""Optimize cost: analyse spend, check budgets (alerting once per period) and recommend savings."""

from __future__ import annotations

from typing import Any

from prefect import flow
from pydantic import BaseModel, Field

from flows.credentials import api_key_from_block
from flows.shape import FlowReport, apply_unless_dry_run, publish
from m1lib.ops.cost.budgets import RaisedAlert
from m1lib.ops.cost.peaks import PEAK_K
from m1lib.ops.cost.report import CostReport
from tasks.cost import (
    analysis_time,
    check_budgets,
    raise_budget_alerts,
    read_spend,
    recommend_savings,
)

ARTIFACT_KEY = "optimize-cost"


class OptimizeCostParams(BaseModel):
    dry_run: bool = Field(
        False, description="Analyse and report only: raise no alert, write nothing."
    )
    lookback_days: int = Field(
        7,
        ge=1,
        le=60,
        description=(
            "Complete UTC days before today that the spend rate, trend, hour-of-day profile and "
            "recommendations are computed from."
        ),
    )
    top: int = Field(10, ge=1, le=100, description="Highest-cost operations listed.")
    peak_k: float = Field(
        PEAK_K,
        gt=0,
        le=20,
        description="k of the peak rule: spend > median + k x max(1.4826 x MAD, median / 20).",
    )
    switch_share: float = Field(
        0.5,
        gt=0,
        le=1,
        description="Share of a tool's calls a model-switch recommendation moves to the cheaper model.",
    )


@flow(name="optimize-cost", log_prints=True)
def optimize_cost(params: OptimizeCostParams | None = None) -> dict[str, Any]:
    """Analyse spend (cost_updates, read through the query engine): by model, tool, component and
    hour of day, the trend, the projected month, the highest-cost operations and peak hours; check
    the daily and monthly budgets (M1_COST_BUDGET_*) and raise each soft or hard alert once per
    period; recommend changes whose savings come from the data.

    Hourly from prefect.yaml; run it by hand with `dry_run` to see the report without alerting.
    """
    api_key_from_block()  # before anything queries or records: the API answers for the replicas
    params = params or OptimizeCostParams()
    now = analysis_time()
    analysis = read_spend(now, params.lookback_days, params.top, params.peak_k)
    statuses = check_budgets(analysis)
    print(
        "; ".join(
            f"{s.period} budget {s.used_pct:g} % used, crossed: {', '.join(s.crossed) or 'none'}"
            for s in statuses
        )
        or "no budget set (M1_COST_BUDGET_DAILY_USD, M1_COST_BUDGET_MONTHLY_USD)"
    )
    # The apply side: budget alerts now; TTL changes of the cost policy join here later.
    raised: list[RaisedAlert] | None = apply_unless_dry_run(
        params.dry_run,
        apply=lambda: raise_budget_alerts(statuses, now),
        rehearse=lambda: None,
    )
    recommendations = recommend_savings(analysis, statuses, params.switch_share)
    report = CostReport(analysis, statuses, recommendations, raised, dry_run=params.dry_run)
    return publish(cost_report(report))


def cost_report(report: CostReport) -> FlowReport:
    """The run's artifacts (table of breakdowns, markdown report) and result, from the report."""
    headline = report.headline()
    raised = report.raised
    alerts = "dry run: no alert raised" if raised is None else f"{len(raised)} budget alerts raised"
    description = f"{headline}; {alerts}."
    return FlowReport(
        artifact_key=ARTIFACT_KEY,
        table=report.table(),
        description=description,
        log=description,
        result=report.to_json(),
        markdown=report.markdown(),
    )
