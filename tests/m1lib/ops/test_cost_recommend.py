"""Recommendations from known data: rates fitted from the cells, savings to the micro-dollar."""

from __future__ import annotations

from datetime import UTC, datetime
from fractions import Fraction
from typing import Any

from m1lib.ops.cost.analysis import CostCell, Periods, analyse
from m1lib.ops.cost.budgets import BudgetStatus
from m1lib.ops.cost.recommend import Rates, fitted_rates, recommend
from m1lib.ops.cost.report import CostReport
from tests.m1lib.ops.cost_factories import cell

NOW = datetime(2028, 2, 10, 12, tzinfo=UTC)  # 19.5 days left in the month
OPUS, HAIKU = "claude-opus-4-5", "claude-haiku-4-5"
HOUR = datetime(2028, 2, 9, 8, tzinfo=UTC)


def priced(
    model: str, tokens_in: int, tokens_out: int, per_in: int, per_out: int, **kw: Any
) -> CostCell:
    """A cell whose cost is per_in/per_out micro-dollars a token."""
    return cell(
        HOUR, tokens_in * per_in + tokens_out * per_out, model=model,
        input_tokens=tokens_in, output_tokens=tokens_out, **kw,
    )  # fmt: skip


# opus at $5/$25 per million tokens (5 and 25 micro-dollars a token), used by web_search with one
# token mix; haiku at $1/$5, used by summarise with two mixes, so its rates can be fitted.
CELLS = [
    priced(OPUS, 1_000, 100, 5, 25, calls=2),  # 7,500
    priced(OPUS, 1_000, 100, 5, 25, calls=2),  # 7,500
    priced(HAIKU, 1_000, 100, 1, 5, tool_name="summarise"),  # 1,500
    priced(HAIKU, 2_000, 50, 1, 5, tool_name="summarise"),  # 2,250
]


def test_rates_are_fitted_exactly_from_two_token_mixes_and_not_from_one() -> None:
    assert fitted_rates(CELLS) == {HAIKU: Rates(Fraction(1), Fraction(5))}


def test_moving_half_of_a_tools_calls_to_the_cheaper_model_saves_half_the_difference() -> None:
    analysis = analyse(CELLS, Periods(NOW, 2))
    (switch,) = recommend(analysis, switch_share=0.5)
    # web_search on opus: 15,000; the same 2,000 in + 200 out on haiku: 2,000 + 1,000 = 3,000
    assert switch.kind == "model-switch"
    assert switch.savings_micros == (15_000 - 3_000) // 2 == 6_000
    assert switch.per_30_days_micros == 6_000 * 30 // 2 == 90_000
    assert switch.title == f"Move 50 % of web_search's {OPUS} calls to {HAIKU}"
    assert switch.evidence["targetCostUsd"] == "0.003000"
    assert "$0.006000" in switch.detail


def test_a_price_table_given_replaces_the_fit_and_no_cheaper_model_means_no_switch() -> None:
    analysis = analyse(CELLS, Periods(NOW, 2))
    sonnet = {"claude-sonnet-4-5": Rates(Fraction(3), Fraction(15))}
    (switch,) = recommend(analysis, rates=sonnet, switch_share=1.0)
    assert switch.evidence["target"] == "claude-sonnet-4-5"
    assert switch.savings_micros == 15_000 - (2_000 * 3 + 200 * 15)  # 6,000
    dearer = {"gold": Rates(Fraction(100), Fraction(100))}
    assert recommend(analysis, rates=dearer) == []


def test_a_month_projected_over_budget_asks_for_the_daily_cut_that_lands_on_it() -> None:
    spent = [cell(datetime(2028, 2, 8, tzinfo=UTC), 1_000_000), cell(HOUR, 3_000_000)]
    analysis = analyse(spent, Periods(NOW, 2))
    assert analysis.projected_month_micros == 4_000_000 + 2_000_000 * 39 // 2  # 43 USD
    month = BudgetStatus(
        "month", datetime(2028, 2, 1, tzinfo=UTC), 30_000_000, Fraction(4, 5),
        analysis.month_micros, analysis.projected_month_micros,
    )  # fmt: skip
    (cut,) = recommend(analysis, [month])
    # (43 - 30) / 19.5 = 0.666666.. USD a day
    assert (cut.kind, cut.savings_micros) == ("budget", 666_667)
    assert "33.3 % of the current rate" in cut.detail
    within = BudgetStatus("month", month.period_start, 50_000_000, Fraction(4, 5), 0, 43_000_000)
    assert recommend(analysis, [within]) == []


def test_the_report_carries_the_recommendations_in_every_form() -> None:
    analysis = analyse(CELLS, Periods(NOW, 2))
    report = CostReport(analysis, [], recommend(analysis), None)
    assert report.to_json()["recommendations"][0]["savingsUsd"] == "0.006000"
    assert "saves $0.006000" in report.markdown()
    assert "No budget set" in report.markdown()
    assert report.to_json()["alertsRaised"] is None
    operations = [row for row in report.table() if row["breakdown"] == "operation"]
    assert operations[0]["name"] == f"{OPUS} / web_search / agent"


def test_the_price_tables_rates_are_micro_dollars_per_token() -> None:
    """USD per million tokens is micro-dollars per token: sonnet 3/15 prices 1,234 in and 567
    out at 12,207 micro-dollars, as record_cost does."""
    from m1lib.ops.cost.prices import PriceTable
    from m1lib.ops.cost.recommend import rates_of

    rates = rates_of(PriceTable(models={"claude-sonnet-4-5": ("3", "15"), "m": ("0.25", "1.5")}))
    assert rates["claude-sonnet-4-5"].cost(1234, 567) == 12_207
    assert rates["m"].cost(4, 2) == Fraction(4)
