"""The cost report: one content, three forms (markdown, a table, JSON), for the optimize-cost flow's
artifacts and for ``m1 cost report`` alike. Pure: it formats what the analysis found."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from m1lib.ops.cost.analysis import CostAnalysis, SpendRow, usd_text
from m1lib.ops.cost.budgets import BudgetStatus, RaisedAlert
from m1lib.ops.cost.recommend import Recommendation

__all__ = ["CostReport"]

ALERTS_NOT_RAISED = "not raised here"  # the CLI, and a dry run


@dataclass(frozen=True)
class CostReport:
    """What one analysis found, the budgets' state, the alerts raised and the recommendations.

    ``raised`` is None where alerts are not raised at all (``m1 cost report``, a dry run).
    """

    analysis: CostAnalysis
    budgets: Sequence[BudgetStatus]
    recommendations: Sequence[Recommendation]
    raised: Sequence[RaisedAlert] | None
    dry_run: bool = False

    def headline(self) -> str:
        a = self.analysis
        return (
            f"Spend today {usd_text(a.today_micros)}, month to date {usd_text(a.month_micros)}, "
            f"projected month {usd_text(a.projected_month_micros)}"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            **self.analysis.to_json(),
            "budgets": [status.to_json() for status in self.budgets],
            "alertsRaised": None
            if self.raised is None
            else [alert.to_json() for alert in self.raised],
            "recommendations": [r.to_json() for r in self.recommendations],
            "dryRun": self.dry_run,
        }

    def table(self) -> list[dict[str, Any]]:
        """One row per group of each breakdown (model, tool, component, top operations)."""
        a = self.analysis
        rows = []
        sections: list[tuple[str, list[SpendRow]]] = [
            ("model", a.by_model),
            ("tool", a.by_tool),
            ("component", a.by_component),
            ("operation", a.operations),
        ]
        for section, items in sections:
            for item in items:
                rows.append(
                    {
                        "breakdown": section,
                        "name": " / ".join(item.key),
                        "calls": item.calls,
                        "spend_usd": usd_text(item.micros),
                        "share_pct": round(float(item.share) * 100, 2),
                        "avg_call_usd": usd_text(item.avg_call_micros),
                    }
                )
        return rows or [
            {
                "breakdown": "none",
                "name": "-",
                "calls": 0,
                "spend_usd": usd_text(0),
                "share_pct": 0.0,
                "avg_call_usd": usd_text(0),
            }
        ]

    def markdown(self) -> str:
        a = self.analysis
        p = a.periods
        lines = [
            "# Cost report",
            "",
            f"At {p.now.isoformat(timespec='seconds')} (UTC periods)."
            + (" Dry run: no alert raised, nothing written." if self.dry_run else ""),
            "",
            f"- Spend today: **{usd_text(a.today_micros)}**",
            f"- Month to date: **{usd_text(a.month_micros)}**",
            f"- Spend rate: {usd_text(round(a.rate_micros_per_day))} per day (mean of the "
            f"{p.lookback_days} complete days from {p.history_start.date().isoformat()})",
            f"- Projected month: **{usd_text(a.projected_month_micros)}** = month to date + rate x "
            f"{float(p.days_left_in_month):.4f} days left",
            f"- Last {p.lookback_days} days and today: {usd_text(a.window_micros)} in "
            f"{a.window_calls} calls",
            f"- Trend of daily spend: {a.trend.direction} ({a.trend.slope_usd_per_day:+.6f} USD/day"
            + ("" if a.trend.p_value is None else f", p = {a.trend.p_value:.3g}")
            + ")",
            "",
            "## Budgets",
            "",
        ]
        lines += self._budget_lines()
        for title, names, items in (
            ("Spend by model", ["model"], a.by_model),
            ("Spend by tool", ["tool"], a.by_tool),
            ("Spend by component", ["component"], a.by_component),
            ("Highest-cost operations", ["model", "tool", "component"], a.operations),
        ):
            lines += ["", f"## {title}", "", *_spend_table(names, items)]
        lines += ["", "## Hour of day (UTC)", "", *self._peak_lines()]
        lines += ["", "## Recommendations", ""]
        if self.recommendations:
            for r in self.recommendations:
                figure = (
                    f"needed: {usd_text(r.savings_micros)} per day"
                    if r.kind == "budget"
                    else f"saves {usd_text(r.savings_micros)}"
                )
                lines.append(f"- **{r.title}** ({figure}): {r.detail}")
        else:
            lines.append("None: no cheaper model explains a tool's tokens, no budget at risk.")
        return "\n".join(lines) + "\n"

    def _budget_lines(self) -> list[str]:
        if not self.budgets:
            return ["No budget set (M1_COST_BUDGET_DAILY_USD, M1_COST_BUDGET_MONTHLY_USD)."]
        lines = [
            "| period | from | budget | soft | spent | used | projected | crossed |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for s in self.budgets:
            projected = "-" if s.projected_micros is None else usd_text(s.projected_micros)
            lines.append(
                f"| {s.period} | {s.period_start.date().isoformat()} | {usd_text(s.budget_micros)}"
                f" | {float(s.soft_ratio * 100):g} % | {usd_text(s.spent_micros)} | {s.used_pct:g} %"
                f" | {projected} | {', '.join(s.crossed) or 'none'} |"
            )
        lines.append("")
        if self.raised is None:
            lines.append(f"Alerts: {ALERTS_NOT_RAISED}.")
        elif not self.raised:
            lines.append("Alerts: none newly raised (each level is raised once per period).")
        else:
            lines += [f"- raised {r.level.alert_level}: {r.message}" for r in self.raised]
        return lines

    def _peak_lines(self) -> list[str]:
        a = self.analysis
        peaks = a.peaks
        found = ", ".join(f"{h:02d}:00" for h in peaks.hours) or "none"
        lines = [
            f"Peak hours: **{found}** (rule: {peaks.rule}; median "
            f"{usd_text(round(peaks.median_micros))}, threshold "
            f"{usd_text(round(peaks.threshold_micros))} over the {a.periods.lookback_days} days)",
            "",
            "| hour | spend | peak |",
            "|---|---|---|",
        ]
        lines += [
            f"| {h:02d} | {usd_text(m)} | {'yes' if h in peaks.hours else ''} |"
            for h, m in enumerate(a.hour_profile)
        ]
        return lines


def _spend_table(names: list[str], items: Sequence[SpendRow]) -> list[str]:
    if not items:
        return ["No spend."]
    head = " | ".join(names)
    lines = [
        f"| {head} | calls | spend | share | avg/call | max call |",
        "|" + "---|" * (len(names) + 5),
    ]
    for r in items:
        lines.append(
            f"| {' | '.join(r.key)} | {r.calls} | {usd_text(r.micros)} | "
            f"{float(r.share) * 100:.2f} % | {usd_text(r.avg_call_micros)} | "
            f"{usd_text(r.max_call_micros)} |"
        )
    return lines
