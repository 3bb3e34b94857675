"""Recommendations whose savings are computed from the spend data, never assumed.

Two kinds, each over the history window (the ``lookback_days`` complete UTC days before today):

- ``model-switch``: a tool's calls on model A cost what they cost; the same calls' tokens priced
  at model B's rates cost less. Moving ``switch_share`` of them saves
  ``switch_share x (spent on A - the same tokens at B's rates)``, at the observed token mix (the
  same input and output tokens: a cheaper model's answers may differ, which only a person can
  weigh). B's rates per token are the caller's price table when given, else fitted from B's own
  cells: cost is linear in tokens (``micros = a x input + b x output`` for every event, so for
  every cell's sums too), and the least-squares solution of that over B's cells gives a and b
  exactly when B was used with at least two different token mixes; with fewer, B is not offered.
- ``budget``: the monthly projection exceeds the monthly budget; spend must fall by
  ``(projected - budget) / days left`` per day to land on it.

Each savings figure is also put per 30 days (window savings / lookback days x 30).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Final

from m1lib.ops.cost.analysis import CostAnalysis, CostCell, usd, usd_text
from m1lib.ops.cost.budgets import BudgetStatus
from m1lib.ops.cost.prices import PriceTable

__all__ = ["Rates", "Recommendation", "fitted_rates", "rates_of", "recommend"]

MAX_SWITCHES: Final = 5


@dataclass(frozen=True, slots=True)
class Rates:
    """A model's price in micro-dollars per token, input and output."""

    input: Fraction
    output: Fraction

    def cost(self, input_tokens: int, output_tokens: int) -> Fraction:
        return self.input * input_tokens + self.output * output_tokens


@dataclass(frozen=True, slots=True)
class Recommendation:
    kind: str  # model-switch, budget
    title: str
    detail: str
    savings_micros: int  # over the history window (budget: the daily cut needed)
    per_30_days_micros: int
    evidence: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "title": self.title,
            "detail": self.detail,
            "savingsUsd": str(usd(self.savings_micros)),
            "per30DaysUsd": str(usd(self.per_30_days_micros)),
            "evidence": self.evidence,
        }


def rates_of(table: PriceTable) -> dict[str, Rates]:
    """The price table's rates: USD per million tokens is exactly micro-dollars per token."""
    return {
        price.model: Rates(Fraction(price.input_usd_per_mtok), Fraction(price.output_usd_per_mtok))
        for price in table.models.values()
    }


def fitted_rates(cells: Iterable[CostCell]) -> dict[str, Rates]:
    """Per model, the rates that explain its cells' costs (least squares, exact in Fractions);
    a model whose cells hold one token mix only (a singular fit) or fit negative is left out."""
    sums: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0])
    for c in cells:
        s = sums[c.model]
        s[0] += c.input_tokens * c.input_tokens
        s[1] += c.input_tokens * c.output_tokens
        s[2] += c.output_tokens * c.output_tokens
        s[3] += c.input_tokens * c.micros
        s[4] += c.output_tokens * c.micros
    rates = {}
    for model, (ii, io, oo, ic, oc) in sums.items():
        determinant = ii * oo - io * io
        if determinant == 0:
            continue
        a = Fraction(ic * oo - oc * io, determinant)
        b = Fraction(ii * oc - io * ic, determinant)
        if a >= 0 and b >= 0:
            rates[model] = Rates(a, b)
    return rates


def _per_30_days(micros: Fraction | int, days: int) -> int:
    return round(Fraction(micros) * 30 / days)


def _switches(
    analysis: CostAnalysis, rates: Mapping[str, Rates], share: Fraction
) -> list[Recommendation]:
    usage: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for c in analysis.history_cells:
        u = usage[(c.tool_name, c.model)]
        u[0] += c.calls
        u[1] += c.micros
        u[2] += c.input_tokens
        u[3] += c.output_tokens
    days = analysis.periods.lookback_days
    found = []
    for (tool, model), (calls, spent, tokens_in, tokens_out) in usage.items():
        options = [
            (spent - rate.cost(tokens_in, tokens_out), other)
            for other, rate in rates.items()
            if other != model
        ]
        best = max(options, default=None, key=lambda option: (option[0], option[1]))
        if best is None or best[0] <= 0:
            continue
        difference, target = best
        savings = round(share * difference)
        if savings <= 0:
            continue
        pct = float(share * 100)
        found.append(
            Recommendation(
                kind="model-switch",
                title=f"Move {pct:g} % of {tool}'s {model} calls to {target}",
                detail=(
                    f"{calls} calls of {tool} on {model} cost {usd_text(spent)} over the last "
                    f"{days} days ({tokens_in} input, {tokens_out} output tokens); the same tokens "
                    f"on {target} cost {usd_text(round(spent - difference))}. Moving {pct:g} % "
                    f"of them saves {usd_text(savings)} ({usd_text(_per_30_days(savings, days))} "
                    "per 30 days) at the observed token mix."
                ),
                savings_micros=savings,
                per_30_days_micros=_per_30_days(savings, days),
                evidence={
                    "toolName": tool,
                    "model": model,
                    "target": target,
                    "calls": calls,
                    "spentUsd": str(usd(spent)),
                    "targetCostUsd": str(usd(round(spent - difference))),
                    "inputTokens": tokens_in,
                    "outputTokens": tokens_out,
                    "share": float(share),
                },
            )
        )
    found.sort(key=lambda r: (-r.savings_micros, r.title))
    return found[:MAX_SWITCHES]


def _budget(analysis: CostAnalysis, statuses: Sequence[BudgetStatus]) -> list[Recommendation]:
    found = []
    for status in statuses:
        if status.period != "month" or status.projected_micros is None:
            continue
        over = status.projected_micros - status.budget_micros
        days_left = analysis.periods.days_left_in_month
        if over <= 0 or days_left <= 0:
            continue
        cut = round(Fraction(over) / days_left)
        rate = analysis.rate_micros_per_day
        share = f" ({float(cut / rate * 100):.1f} % of the current rate)" if rate else ""
        found.append(
            Recommendation(
                kind="budget",
                title="Cut daily spend to stay within the monthly budget",
                detail=(
                    f"The month is projected at {usd_text(status.projected_micros)} against a "
                    f"budget of {usd_text(status.budget_micros)}: spend must fall by "
                    f"{usd_text(cut)} per day{share} for the {float(days_left):.2f} days left."
                ),
                savings_micros=cut,
                per_30_days_micros=cut * 30,
                evidence={
                    "projectedUsd": str(usd(status.projected_micros)),
                    "budgetUsd": str(usd(status.budget_micros)),
                    "daysLeft": round(float(days_left), 6),
                },
            )
        )
    return found


def recommend(
    analysis: CostAnalysis,
    statuses: Sequence[BudgetStatus] = (),
    *,
    switch_share: float = 0.5,
    rates: Mapping[str, Rates] | None = None,
) -> list[Recommendation]:
    """Budget recommendations first, then model switches by savings (pure)."""
    known = dict(rates) if rates is not None else fitted_rates(analysis.history_cells)
    share = Fraction(str(switch_share))
    return _budget(analysis, statuses) + _switches(analysis, known, share)
