"""From what the processes published to TTL proposals: the optimize-cost flow's planning step; pure.

Each process's optimiser saw its own share of the traffic, so the flow combines their
recommendations per tool, weighted by request volume (a replica that served most of a tool's
requests knows it best), using only the processes that chose by cost-benefit: a process still
warming up or probing has nothing to say yet. The combined TTL becomes a :class:`Proposal`;
:func:`~m1lib.ops.cost.policy.recommend_changes` clamps it to the tool's staleness budget.

Peak/off-peak: when the spend analysis found peak hours forming one UTC range and a tool's request
rate at those hours differs from the rest of the day by ``peak_ratio`` or more (either way), the
tool gets a peak and an off-peak TTL: ``T * sqrt(mean rate / rate there)``. Why the square root:
for a key asked much more often than its TTL, misses cost about ``c / T`` and stale hits about
``r lam T / 2`` per second, so at one stale price the best ``T`` goes as ``1 / sqrt(r)``. It needs
requests seen in every hour of the day (a younger process cannot tell peak from absence).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from m1lib.ops.cost.observe import Observation
from m1lib.ops.cost.policy import MAX_TTL_S, Figures, Proposal, ToolTtl, stale_mode_proposals

__all__ = ["Combined", "TtlPlan", "combine", "peak_range", "plan"]


@dataclass(frozen=True)
class Combined:
    """One tool's recommendations from every fresh process, combined."""

    tool: str
    ttl_s: float | None  # None: no process chose by cost-benefit yet
    requests_per_h: float  # all processes' together
    processes: int
    learned: int  # processes whose choice was cost-benefit
    reasons: tuple[str, ...]  # the other processes' reasons, distinct
    change_rate_per_h: float | None = None
    expected_spend_usd_per_h: float | None = None
    baseline_spend_usd_per_h: float | None = None
    expected_stale_per_h: float | None = None
    baseline_stale_per_h: float | None = None
    requests_by_hour: tuple[int, ...] = (0,) * 24


@dataclass(frozen=True)
class TtlPlan:
    """The proposals and why tools got none (or no peak/off-peak split)."""

    combined: dict[str, Combined]
    proposals: list[Proposal]
    notes: dict[str, str]  # tool -> why no proposal, or why no peak/off-peak TTLs
    over_budget: bool

    def to_json(self) -> dict[str, object]:
        return {
            "overBudget": self.over_budget,
            "combined": {
                tool: {
                    "ttl_s": c.ttl_s,
                    "requests_per_h": c.requests_per_h,
                    "processes": c.processes,
                    "learned": c.learned,
                    "change_rate_per_h": c.change_rate_per_h,
                    "expected_spend_usd_per_h": c.expected_spend_usd_per_h,
                    "baseline_spend_usd_per_h": c.baseline_spend_usd_per_h,
                    "expected_stale_per_h": c.expected_stale_per_h,
                    "baseline_stale_per_h": c.baseline_stale_per_h,
                }
                for tool, c in self.combined.items()
            },
            "notes": dict(self.notes),
        }


def _weighted(values: Sequence[tuple[float | None, float]]) -> float | None:
    """Mean of the values that are known, weighted (plain mean when every weight is 0)."""
    known = [(v, w) for v, w in values if v is not None and math.isfinite(v)]
    if not known:
        return None
    total = sum(w for _, w in known)
    if total <= 0:
        return sum(v for v, _ in known) / len(known)
    return sum(v * w for v, w in known) / total


def _summed(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def combine(observations: Sequence[Observation]) -> dict[str, Combined]:
    """Per tool: the request-weighted TTL of the processes that chose by cost-benefit, the summed
    request volume and expected figures, the summed requests by hour."""
    by_tool: dict[str, list[Observation]] = {}
    for obs in observations:
        by_tool.setdefault(obs.tool, []).append(obs)
    out = {}
    for tool, rows in sorted(by_tool.items()):
        learned = [r for r in rows if r.learned]
        weights = [(r.ttl_s, r.requests_per_h) for r in learned]
        out[tool] = Combined(
            tool=tool,
            ttl_s=_weighted(weights),
            requests_per_h=sum(r.requests_per_h for r in rows),
            processes=len(rows),
            learned=len(learned),
            reasons=tuple(sorted({r.reason for r in rows if not r.learned})),
            change_rate_per_h=_weighted([(r.change_rate_per_h, r.requests_per_h) for r in learned]),
            expected_spend_usd_per_h=_summed([r.expected_spend_usd_per_h for r in learned]),
            baseline_spend_usd_per_h=_summed([r.baseline_spend_usd_per_h for r in learned]),
            expected_stale_per_h=_summed([r.expected_stale_per_h for r in learned]),
            baseline_stale_per_h=_summed([r.baseline_stale_per_h for r in learned]),
            requests_by_hour=tuple(sum(r.requests_by_hour[h] for r in rows) for h in range(24)),
        )
    return out


def peak_range(hours: Sequence[int]) -> tuple[int, int] | None:
    """The peak hours as one UTC range [start, end) (it may wrap midnight), or None when they are
    none, all day, or more than one range (a rule holds one)."""
    chosen = set(hours)
    if not chosen or len(chosen) >= 24:
        return None
    starts = [h for h in sorted(chosen) if (h - 1) % 24 not in chosen]
    if len(starts) != 1:
        return None
    return starts[0], (starts[0] + len(chosen)) % 24


def _peak_split(
    ttl_s: float, by_hour: Sequence[int], peak: tuple[int, int], ratio: float
) -> tuple[float, float] | str:
    """(peak TTL, off-peak TTL), or why not."""
    if any(count <= 0 for count in by_hour):
        return "no peak/off-peak TTLs: not every hour of the day has requests yet"
    start, end = peak
    inside = [(start + i) % 24 for i in range((end - start) % 24)]
    outside = [h for h in range(24) if h not in inside]
    peak_rate = sum(by_hour[h] for h in inside) / len(inside)
    off_rate = sum(by_hour[h] for h in outside) / len(outside)
    mean_rate = sum(by_hour) / 24
    if max(peak_rate, off_rate) < ratio * min(peak_rate, off_rate):
        return (
            f"no peak/off-peak TTLs: request rate at peak {peak_rate / off_rate:.2f}x off-peak, "
            f"below the {ratio:g}x that calls for them"
        )
    low = min(ttl_s, 60.0)  # never below the optimiser's floor (nor the TTL it chose)

    def bounded(seconds: float) -> float:
        return min(max(seconds, low), MAX_TTL_S)

    return (
        bounded(ttl_s * math.sqrt(mean_rate / peak_rate)),
        bounded(ttl_s * math.sqrt(mean_rate / off_rate)),
    )


def plan(
    observations: Sequence[Observation],
    current: Mapping[str, ToolTtl],
    figures: Mapping[str, Figures],
    *,
    peak_hours: Sequence[int],
    over_budget: bool,
    default_budget_s: float,
    peak_ratio: float,
    actor: str = "optimize-cost",
) -> TtlPlan:
    """The proposals for this run: a combined cost-benefit TTL per tool (peak/off-peak when the
    traffic calls for it), plus the over-budget mode's stale-while-revalidate; each carries the
    tool's figures now (the change log's "before")."""
    combined = combine(observations)
    peak = peak_range(peak_hours)
    notes: dict[str, str] = {}
    proposals: dict[str, Proposal] = {}
    for tool, c in combined.items():
        if c.ttl_s is None:
            notes[tool] = "no proposal: " + ("; ".join(c.reasons) or "no recommendation")
            continue
        reason = f"cost-benefit from {c.learned} of {c.processes} processes"
        if c.change_rate_per_h is not None:
            reason += f", {c.requests_per_h:.0f} requests/h, {c.change_rate_per_h:.3g} changes/h"
        if c.expected_spend_usd_per_h is not None and c.baseline_spend_usd_per_h is not None:
            reason += (
                f", expected ${c.expected_spend_usd_per_h:.6f}/h vs "
                f"${c.baseline_spend_usd_per_h:.6f}/h at the baseline TTL"
            )
        proposal = Proposal(
            tool,
            ttl_s=c.ttl_s,
            staleness_budget_s=None if tool in current else default_budget_s,
            reason=reason,
            figures=figures.get(tool),
        )
        if peak is None:
            notes[tool] = (
                "no peak/off-peak TTLs: the spend analysis found no peak hours"
                if not peak_hours
                else "no peak/off-peak TTLs: the peak hours are not one range"
            )
        else:
            split = _peak_split(c.ttl_s, c.requests_by_hour, peak, peak_ratio)
            if isinstance(split, str):
                notes[tool] = split
            else:
                proposal = replace(
                    proposal,
                    peak_ttl_s=split[0],
                    offpeak_ttl_s=split[1],
                    peak_hours=peak,
                    reason=proposal.reason + f"; peak {peak[0]:02d}-{peak[1]:02d} UTC",
                )
        proposals[tool] = proposal
    # Within budget, stale-while-revalidate goes off only where this flow last wrote the rule: a
    # window an operator set by hand stays.
    stale_scope = (
        current
        if over_budget
        else {tool: rule for tool, rule in current.items() if rule.updated_by == actor}
    )
    for stale in stale_mode_proposals(stale_scope, over_budget=over_budget):
        mine = proposals.get(stale.tool)
        if mine is None:
            proposals[stale.tool] = replace(stale, figures=figures.get(stale.tool))
        else:
            proposals[stale.tool] = replace(
                mine,
                stale_while_revalidate_s=stale.stale_while_revalidate_s,
                reason=f"{mine.reason}; {stale.reason}",
            )
    return TtlPlan(combined, list(proposals.values()), notes, over_budget)
