"""The TTL part of the optimize-cost report: proposed, applied and reverted changes; pure."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from m1lib.ops.cost.policy import Figures, PolicyChange, ToolTtl
from m1lib.ops.cost.policy_store import AppliedChanges
from m1lib.ops.cost.ttl_guard import GuardOutcome
from m1lib.ops.cost.ttl_plan import TtlPlan

__all__ = ["TtlReport"]


def _rule(rule: ToolTtl | None) -> str:
    if rule is None:
        return "default TTL"
    text = f"{rule.ttl_s:.0f} s"
    if rule.peak_hours is not None and rule.peak_ttl_s is not None:
        start, end = rule.peak_hours
        text += f" (peak {start:02d}-{end:02d} UTC {rule.peak_ttl_s:.0f} s"
        if rule.offpeak_ttl_s is not None:
            text += f", off-peak {rule.offpeak_ttl_s:.0f} s"
        text += ")"
    if rule.stale_while_revalidate_s:
        text += f" + {rule.stale_while_revalidate_s:.0f} s stale"
    return text + f", budget {rule.staleness_budget_s:.0f} s"


def _figures(figures: Figures | None) -> str:
    if figures is None:
        return "-"
    parts = []
    for name, value in figures.to_json().items():
        if value is not None:
            parts.append(f"{name} {value:.4g}")
    return ", ".join(parts) or "-"


@dataclass(frozen=True)
class TtlReport:
    """What the TTL step of one run saw, proposed, applied (None: recommend mode) and reverted."""

    plan: TtlPlan
    changes: Sequence[PolicyChange]
    applied: AppliedChanges | None
    guard: Sequence[GuardOutcome]
    dry_run: bool

    @property
    def reverted(self) -> list[GuardOutcome]:
        return [g for g in self.guard if g.reverted or (self.dry_run and g.verdict.revert)]

    def headline(self) -> str:
        verb = "proposed (recommend mode)" if self.dry_run else "applied"
        undo = "would revert" if self.dry_run else "reverted"
        return (
            f"{len(self.changes)} TTL changes {verb}, {len(self.guard)} judged, "
            f"{len(self.reverted)} {undo}"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            **self.plan.to_json(),
            "changes": [change.to_json() for change in self.changes],
            "applied": None if self.applied is None else self.applied.to_json(),
            "guard": [outcome.to_json() for outcome in self.guard],
        }

    def table(self) -> list[dict[str, Any]]:
        """Rows shaped like the cost table's (breakdown, name, ...), one per change or verdict."""
        rows = []
        status = "ttl-proposed" if self.applied is None else "ttl-applied"
        for change in self.changes:
            rows.append(
                {
                    "breakdown": status,
                    "name": f"{change.tool}: {_rule(change.before)} -> {_rule(change.after)}",
                    "calls": None,
                    "spend_usd": None,
                    "share_pct": None,
                    "avg_call_usd": None,
                }
            )
        for outcome in self.guard:
            rows.append(
                {
                    "breakdown": "ttl-reverted" if outcome.verdict.revert else "ttl-kept",
                    "name": f"{outcome.change.tool}: {outcome.verdict.reason or 'no worse'}",
                    "calls": None,
                    "spend_usd": None,
                    "share_pct": None,
                    "avg_call_usd": None,
                }
            )
        return rows

    def markdown(self) -> str:
        mode = "recommend mode (dry run): nothing changed" if self.dry_run else "apply mode"
        lines = ["", "## Cache TTLs", "", f"{self.headline()}; {mode}."]
        if self.plan.over_budget:
            lines.append("Over budget: stale-while-revalidate within each staleness budget.")
        if self.changes:
            lines += [
                "",
                "| tool | before | after | figures before | reason |",
                "|---|---|---|---|---|",
            ]
            for c in self.changes:
                clamped = " (clamped to the budget)" if c.clamped else ""
                lines.append(
                    f"| {c.tool} | {_rule(c.before)} | {_rule(c.after)}{clamped} | "
                    f"{_figures(c.figures_before)} | {c.reason} |"
                )
        if self.guard:
            lines += ["", "Guard:", "", "| tool | before | after | verdict |", "|---|---|---|---|"]
            for g in self.guard:
                if g.verdict.revert:
                    verdict = ("reverted: " if g.reverted else "revert: ") + g.verdict.reason
                else:
                    verdict = "kept"
                lines.append(
                    f"| {g.change.tool} | {_figures(g.change.figures_before)} | "
                    f"{_figures(g.figures_after)} | {verdict} |"
                )
        if self.plan.notes:
            lines += ["", "Notes:", ""]
            lines += [f"- {tool}: {note}" for tool, note in sorted(self.plan.notes.items())]
        return "\n".join(lines) + "\n"
