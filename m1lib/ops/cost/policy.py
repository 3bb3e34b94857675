"""The cache TTL policy: per-tool TTLs bounded by a staleness budget, and how changes are proposed.

Everything here is pure (no I/O): the rules every process's `cached_call` follows
(:class:`ToolTtl`, resolved by a :class:`PolicySnapshot` on the hot path), the checks that keep
them within bounds, and :func:`recommend_changes`, which turns an optimiser's proposals into
changes without touching anything (the recommend mode; :mod:`m1lib.ops.cost.policy_store`
applies them).

The bound: whatever is served is at most ``staleness_budget_s`` old, so ``ttl_s``, the peak and
off-peak TTLs, and each of them plus ``stale_while_revalidate_s`` stay within the budget.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Final

from m1lib.cache import TtlRule
from m1lib.errors import InputError
from m1lib.text import TOOL_MAX, check_text

__all__ = [
    "MAX_TTL_S",
    "RELOAD_COMMAND",
    "Figures",
    "PolicyChange",
    "PolicySnapshot",
    "Proposal",
    "ToolTtl",
    "check_policy",
    "clamp",
    "recommend_changes",
    "stale_mode_proposals",
]

RELOAD_COMMAND: Final = "cache.policy.reload"
"""The control command that makes every replica re-read the policy now."""
MAX_TTL_S: Final = 30 * 86400.0
"""Largest TTL or staleness budget a policy holds: 30 days."""


@dataclass(frozen=True)
class Figures:
    """A tool's cache figures over a window: what the guard compares before and after a change.

    Rates are fractions 0-1 (None: not measured): ``hit_rate`` of gets, ``error_rate`` of tool
    executions, ``stale_rate`` of hits served from an entry a later refetch found changed (an
    upper bound of stale responses, :mod:`m1lib.ops.cost.staleness`).
    """

    hit_rate: float | None = None
    error_rate: float | None = None
    stale_rate: float | None = None
    spend_usd: float | None = None

    def to_json(self) -> dict[str, float | None]:
        return {
            "hit_rate": self.hit_rate,
            "error_rate": self.error_rate,
            "stale_rate": self.stale_rate,
            "spend_usd": self.spend_usd,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> Figures | None:
        if data is None:
            return None
        return cls(
            hit_rate=data.get("hit_rate"),
            error_rate=data.get("error_rate"),
            stale_rate=data.get("stale_rate"),
            spend_usd=data.get("spend_usd"),
        )


@dataclass(frozen=True)
class ToolTtl:
    """One tool's rule: its TTL, optionally by time of day, within its staleness budget.

    ``peak_hours`` is ``(start, end)`` in UTC hours, start inclusive, end exclusive (``(22, 6)``
    wraps midnight); inside it ``peak_ttl_s`` applies, outside ``offpeak_ttl_s``, each falling
    back to ``ttl_s``. ``stale_while_revalidate_s`` > 0 lets an expired entry be served that much
    longer while one refresh runs (the over-budget mode: fewer calls).
    """

    tool: str
    ttl_s: float
    staleness_budget_s: float
    peak_ttl_s: float | None = None
    offpeak_ttl_s: float | None = None
    peak_hours: tuple[int, int] | None = None
    stale_while_revalidate_s: float = 0.0
    version: int = 0
    updated_at: datetime | None = field(default=None, compare=False)
    updated_by: str = field(default="", compare=False)

    def ttl_at(self, epoch_s: float) -> float:
        """The TTL in force at ``epoch_s`` (peak, off-peak or plain)."""
        if self.peak_hours is None:
            return self.ttl_s
        start, end = self.peak_hours
        hour = int(epoch_s // 3600) % 24
        peak = start <= hour < end if start <= end else (hour >= start or hour < end)
        chosen = self.peak_ttl_s if peak else self.offpeak_ttl_s
        return self.ttl_s if chosen is None else chosen

    def rule_at(self, epoch_s: float) -> TtlRule:
        return TtlRule(self.ttl_at(epoch_s), self.stale_while_revalidate_s)

    def max_ttl_s(self) -> float:
        """The longest TTL this rule can give (any hour)."""
        return max(t for t in (self.ttl_s, self.peak_ttl_s, self.offpeak_ttl_s) if t is not None)

    def settings_json(self) -> dict[str, Any]:
        """What a change log row keeps: the rule without its bookkeeping."""
        return {
            "ttl_s": self.ttl_s,
            "staleness_budget_s": self.staleness_budget_s,
            "peak_ttl_s": self.peak_ttl_s,
            "offpeak_ttl_s": self.offpeak_ttl_s,
            "peak_hours": list(self.peak_hours) if self.peak_hours is not None else None,
            "stale_while_revalidate_s": self.stale_while_revalidate_s,
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "tool": self.tool,
            **self.settings_json(),
            "version": self.version,
            "updated_at": None if self.updated_at is None else self.updated_at.isoformat(),
            "updated_by": self.updated_by,
        }

    @classmethod
    def from_settings_json(cls, tool: str, data: Mapping[str, Any]) -> ToolTtl:
        hours = data.get("peak_hours")
        return check_policy(
            cls(
                tool=tool,
                ttl_s=data["ttl_s"],
                staleness_budget_s=data["staleness_budget_s"],
                peak_ttl_s=data.get("peak_ttl_s"),
                offpeak_ttl_s=data.get("offpeak_ttl_s"),
                peak_hours=None if hours is None else (int(hours[0]), int(hours[1])),
                stale_while_revalidate_s=data.get("stale_while_revalidate_s") or 0.0,
            )
        )


def _seconds(path: str, value: object, *, positive: bool = True, optional: bool = False) -> None:
    """InputError naming ``path`` unless ``value`` is a number of seconds within range."""
    if value is None and optional:
        return
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not 0 <= value <= MAX_TTL_S
        or (positive and value == 0)
    ):
        bound = "> 0" if positive else ">= 0"
        allowed = f"a number of seconds {bound} and <= {MAX_TTL_S:g}"
        raise InputError(
            path,
            f"{value!r:.40} is not a number of seconds in range",
            [allowed + (" or null" if optional else "")],
        )


def check_policy(policy: ToolTtl) -> ToolTtl:
    """``policy`` if every field is in range and the TTLs keep within the budget, else InputError
    naming the field and what is allowed."""
    check_text("tool", policy.tool, TOOL_MAX, required=True)
    _seconds("staleness_budget_s", policy.staleness_budget_s)
    _seconds("ttl_s", policy.ttl_s)
    _seconds("peak_ttl_s", policy.peak_ttl_s, optional=True)
    _seconds("offpeak_ttl_s", policy.offpeak_ttl_s, optional=True)
    _seconds("stale_while_revalidate_s", policy.stale_while_revalidate_s, positive=False)
    hours = policy.peak_hours
    if hours is not None and (
        len(hours) != 2
        or any(isinstance(h, bool) or not isinstance(h, int) or not 0 <= h <= 23 for h in hours)
        or hours[0] == hours[1]
    ):
        raise InputError(
            "peak_hours",
            f"{hours!r:.40} is not a range of hours",
            ["[start, end], 0-23, start != end (UTC)"],
        )
    if (policy.peak_ttl_s is not None or policy.offpeak_ttl_s is not None) and hours is None:
        raise InputError(
            "peak_hours",
            "is missing",
            ["[start, end] UTC hours when peak or off-peak TTLs are set"],
        )
    budget = policy.staleness_budget_s
    for name in ("ttl_s", "peak_ttl_s", "offpeak_ttl_s"):
        value = getattr(policy, name)
        if value is not None and value + policy.stale_while_revalidate_s > budget:
            extra = " plus stale_while_revalidate_s" if policy.stale_while_revalidate_s else ""
            raise InputError(
                name,
                f"{value:g} s{extra} exceeds the staleness budget {budget:g} s",
                [f"at most {budget - policy.stale_while_revalidate_s:g} s"],
            )
    return policy


def clamp(policy: ToolTtl) -> ToolTtl:
    """``policy`` brought within its staleness budget: each TTL at most the budget, then the
    stale-while-revalidate window at most what the longest TTL leaves of it."""
    budget = policy.staleness_budget_s

    def within(value: float | None) -> float | None:
        return None if value is None else min(value, budget)

    ttl = within(policy.ttl_s)
    assert ttl is not None
    clamped = replace(
        policy,
        ttl_s=ttl,
        peak_ttl_s=within(policy.peak_ttl_s),
        offpeak_ttl_s=within(policy.offpeak_ttl_s),
    )
    longest = clamped.max_ttl_s()
    swr = min(policy.stale_while_revalidate_s, max(0.0, budget - longest))
    while swr > 0 and longest + swr > budget:  # the subtraction rounded up: step down an ulp
        swr = math.nextafter(swr, 0.0)
    return replace(clamped, stale_while_revalidate_s=swr)


class PolicySnapshot:
    """The TTL policy as one process holds it: the `TtlPolicy` its cache calls on the hot path.

    Immutable; a refresh builds a new snapshot and swaps it in (one attribute store), so a call
    never sees half a policy.
    """

    def __init__(self, rules: Iterable[ToolTtl] = (), *, version: int = 0) -> None:
        self.rules: Mapping[str, ToolTtl] = {rule.tool: rule for rule in rules}
        self.version = version  # the highest row version it holds: what a reload reports

    def __call__(self, tool: str) -> TtlRule | None:
        rule = self.rules.get(tool)
        return None if rule is None else rule.rule_at(time.time())

    def __len__(self) -> int:
        return len(self.rules)


@dataclass(frozen=True)
class Proposal:
    """What an optimiser (or an operator) wants for one tool; None fields keep the current value.

    A tool without a policy yet needs ``staleness_budget_s`` (else ``default_budget_s`` of
    :func:`recommend_changes`).
    """

    tool: str
    ttl_s: float | None = None
    staleness_budget_s: float | None = None
    stale_while_revalidate_s: float | None = None
    peak_ttl_s: float | None = None
    offpeak_ttl_s: float | None = None
    peak_hours: tuple[int, int] | None = None
    reason: str = ""
    figures: Figures | None = None  # the tool's figures now: the change log's "before"


@dataclass(frozen=True)
class PolicyChange:
    """One change to apply: the tool's rule before (None: it had none) and after."""

    tool: str
    before: ToolTtl | None
    after: ToolTtl
    reason: str = ""
    figures_before: Figures | None = None
    clamped: bool = False  # the proposal asked for more than the budget allows

    def to_json(self) -> dict[str, Any]:
        return {
            "tool": self.tool,
            "before": None if self.before is None else self.before.settings_json(),
            "after": self.after.settings_json(),
            "reason": self.reason,
            "clamped": self.clamped,
            "figures_before": None
            if self.figures_before is None
            else self.figures_before.to_json(),
        }


def recommend_changes(
    current: Mapping[str, ToolTtl],
    proposals: Iterable[Proposal],
    *,
    default_budget_s: float | None = None,
) -> list[PolicyChange]:
    """The changes ``proposals`` make to ``current``, each clamped to its staleness budget; pure.

    Proposals that change nothing are left out, so a recommend run lists only real changes. A
    proposal for a tool with no policy and no budget (and no ``default_budget_s``) is an
    InputError naming ``proposals[i].staleness_budget_s``.
    """
    changes: list[PolicyChange] = []
    for index, proposal in enumerate(proposals):
        before = current.get(proposal.tool)
        budget = proposal.staleness_budget_s
        if budget is None:
            budget = before.staleness_budget_s if before is not None else default_budget_s
        if budget is None:
            raise InputError(
                f"proposals[{index}].staleness_budget_s",
                f"tool {proposal.tool!r:.130} has no policy yet, so it needs a staleness budget",
                ["a number of seconds > 0"],
            )
        base = before or ToolTtl(
            tool=proposal.tool, ttl_s=proposal.ttl_s or budget, staleness_budget_s=budget
        )

        def pick(new: Any, old: Any) -> Any:
            return old if new is None else new

        wanted = replace(
            base,
            ttl_s=pick(proposal.ttl_s, base.ttl_s),
            staleness_budget_s=budget,
            stale_while_revalidate_s=pick(
                proposal.stale_while_revalidate_s, base.stale_while_revalidate_s
            ),
            peak_ttl_s=pick(proposal.peak_ttl_s, base.peak_ttl_s),
            offpeak_ttl_s=pick(proposal.offpeak_ttl_s, base.offpeak_ttl_s),
            peak_hours=pick(proposal.peak_hours, base.peak_hours),
        )
        # check the fields' ranges first (with a budget wide enough), then bring within budget
        check_policy(replace(wanted, staleness_budget_s=MAX_TTL_S, stale_while_revalidate_s=0.0))
        _seconds(f"proposals[{index}].staleness_budget_s", budget)
        _seconds("stale_while_revalidate_s", wanted.stale_while_revalidate_s, positive=False)
        after = clamp(wanted)
        if before is not None and after.settings_json() == before.settings_json():
            continue
        changes.append(
            PolicyChange(
                tool=proposal.tool,
                before=before,
                after=after,
                reason=proposal.reason,
                figures_before=proposal.figures,
                clamped=after != wanted,
            )
        )
    return changes


def stale_mode_proposals(current: Mapping[str, ToolTtl], *, over_budget: bool) -> list[Proposal]:
    """The over-budget mode as proposals: over budget, every tool serves stale for all the room its
    staleness budget leaves past its longest TTL (fewer calls, never older than the budget); back
    under budget, stale-while-revalidate goes off again. Tools already so are left out; pure."""
    proposals = []
    for rule in current.values():
        room = max(0.0, rule.staleness_budget_s - rule.max_ttl_s()) if over_budget else 0.0
        if room != rule.stale_while_revalidate_s:
            reason = (
                "over budget: serve stale within the staleness budget"
                if over_budget
                else ("within budget: stale-while-revalidate off")
            )
            proposals.append(Proposal(rule.tool, stale_while_revalidate_s=room, reason=reason))
    return proposals
