"""Optimize cost: analyse spend, check budgets (alerting once per period), recommend savings and
optimise the cache TTL policy from what the processes' caches saw (recommend or apply mode)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from prefect import flow
from pydantic import BaseModel, Field

from flows.credentials import api_key_from_block
from flows.shape import FlowReport, apply_unless_dry_run, publish
from m1lib.ops.cost.analysis import CostAnalysis
from m1lib.ops.cost.budgets import BudgetStatus, Level, RaisedAlert
from m1lib.ops.cost.peaks import PEAK_K
from m1lib.ops.cost.policy_store import AppliedChanges
from m1lib.ops.cost.report import CostReport
from m1lib.ops.cost.ttl_report import TtlReport
from m1lib.settings import get_settings
from tasks.cost import (
    analysis_time,
    check_budgets,
    raise_budget_alerts,
    read_spend,
    recommend_savings,
)
from tasks.cost_policy import (
    apply_changes,
    guard_check,
    load_ttl_policy,
    plan_ttl_changes,
    read_ttl_figures,
    read_ttl_observations,
    recommend_changes,
)

ARTIFACT_KEY = "optimize-cost"
ACTOR = "optimize-cost"
FIGURES_WINDOW = timedelta(hours=1)  # the figures a change is judged by: the last hour's


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
    optimise_ttls: bool = Field(
        True,
        description=(
            "Optimise the cache TTL policy: judge settled changes (the guard reverts harmful "
            "ones), combine the processes' published recommendations and propose (dry_run) or "
            "apply TTL changes."
        ),
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
    ttls = optimise_ttls(now, analysis, statuses, params.dry_run) if params.optimise_ttls else None
    return publish(cost_report(report, ttls))


def optimise_ttls(
    now: datetime, analysis: CostAnalysis, statuses: list[BudgetStatus], dry_run: bool
) -> TtlReport:
    """The TTL loop: judge the changes that have settled (revert the harmful), then combine the
    published recommendations into changes and apply them (or, in recommend mode, only list them).

    The guard runs first so this run's own changes are never judged by figures from before them.
    """
    settings = get_settings().cost
    figures = read_ttl_figures(now - FIGURES_WINDOW, now)
    guard = apply_unless_dry_run(
        dry_run,
        apply=lambda: guard_check(figures, settings.ttl_settle_s),
        rehearse=lambda: guard_check(figures, settings.ttl_settle_s, dry_run=True),
    )
    current = load_ttl_policy()
    observations = read_ttl_observations(
        now - timedelta(seconds=settings.ttl_observation_max_age_s)
    )
    over_budget = any(Level.HARD in status.crossed for status in statuses)
    plan = plan_ttl_changes(
        observations,
        current,
        figures,
        list(analysis.peaks.hours),
        over_budget,
        settings.ttl_default_budget_s,
        settings.ttl_peak_ratio,
    )
    changes = recommend_changes(current, plan.proposals, settings.ttl_default_budget_s)
    applied: AppliedChanges | None = apply_unless_dry_run(
        dry_run,
        apply=lambda: apply_changes(changes, ACTOR, False),
        rehearse=lambda: None,
    )
    return TtlReport(plan, changes, applied, guard, dry_run=dry_run)


def cost_report(report: CostReport, ttls: TtlReport | None = None) -> FlowReport:
    """The run's artifacts (table of breakdowns, markdown report) and result, from the reports."""
    headline = report.headline()
    raised = report.raised
    alerts = "dry run: no alert raised" if raised is None else f"{len(raised)} budget alerts raised"
    description = f"{headline}; {alerts}" + ("" if ttls is None else f"; {ttls.headline()}") + "."
    result = report.to_json()
    if ttls is not None:
        result["ttl"] = ttls.to_json()
    return FlowReport(
        artifact_key=ARTIFACT_KEY,
        table=report.table() + ([] if ttls is None else ttls.table()),
        description=description,
        log=description,
        result=result,
        markdown=report.markdown() + ("" if ttls is None else ttls.markdown()),
    )
