"""Cost arithmetic on hand-computed cases: micro-dollars, periods, projection, breakdowns, trend;
and the cells read back through the query engine (a real in-memory runtime, paged)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from fractions import Fraction

import pytest

from m1lib.errors import InputError
from m1lib.metrics import MetricsRuntime
from m1lib.ops.cost.analysis import (
    Periods,
    analyse,
    fetch_analysis,
    fetch_cells,
    month_bounds,
    to_micros,
    usd,
    usd_text,
)
from m1lib.settings import Settings
from tests.m1lib.ops.cost_factories import cell

H = timedelta(hours=1)


def test_float_sums_become_exact_micro_dollars() -> None:
    assert 0.1 + 0.2 != 0.3
    assert to_micros(0.1 + 0.2) == 300_000
    assert to_micros(sum([0.000001] * 1000)) == 1_000
    assert to_micros(None) == 0
    assert usd(1_234_567_891) == Decimal("1234.567891")
    assert usd_text(1_234_567_891) == "$1,234.567891"


@pytest.mark.parametrize(
    ("now", "days_left", "month_start", "next_month"),
    [
        (datetime(2027, 2, 28, 18, tzinfo=UTC), Fraction(1, 4), (2027, 2, 1), (2027, 3, 1)),
        (datetime(2028, 2, 28, 12, tzinfo=UTC), Fraction(3, 2), (2028, 2, 1), (2028, 3, 1)),
        (datetime(2026, 4, 30, 6, tzinfo=UTC), Fraction(3, 4), (2026, 4, 1), (2026, 5, 1)),
        (datetime(2026, 12, 31, tzinfo=UTC), Fraction(1), (2026, 12, 1), (2027, 1, 1)),
        (datetime(2026, 12, 1, tzinfo=UTC), Fraction(31), (2026, 12, 1), (2027, 1, 1)),
    ],
)
def test_days_left_are_exact_in_months_of_28_29_30_and_31_days(
    now: datetime,
    days_left: Fraction,
    month_start: tuple[int, int, int],
    next_month: tuple[int, int, int],
) -> None:
    periods = Periods(now, 7)
    assert periods.days_left_in_month == days_left
    assert month_bounds(now) == (
        datetime(*month_start, tzinfo=UTC),
        datetime(*next_month, tzinfo=UTC),
    )


def test_periods_take_another_zone_as_utc_and_refuse_naive_times() -> None:
    from zoneinfo import ZoneInfo

    paris = datetime(2026, 12, 1, 0, 30, tzinfo=ZoneInfo("Europe/Paris"))  # Nov 30 23:30 UTC
    assert Periods(paris, 1).month_start == datetime(2026, 11, 1, tzinfo=UTC)
    with pytest.raises(InputError, match="now"):
        Periods(datetime(2026, 12, 1), 1)
    with pytest.raises(InputError, match="lookback_days"):
        Periods(datetime(2026, 12, 1, tzinfo=UTC), 0)


NOW = datetime(
    2028, 2, 10, 12, 0, tzinfo=UTC
)  # leap February: 0.5 + 19 (11th..29th) = 19.5 days left


def test_projection_is_month_to_date_plus_the_history_rate_times_the_days_left() -> None:
    cells = [
        cell(datetime(2028, 1, 31, 23, tzinfo=UTC), 9_000_000),  # January: in no total below
        cell(datetime(2028, 2, 1, 0, tzinfo=UTC), 500_000),  # this month, before the history
        cell(datetime(2028, 2, 8, 10, tzinfo=UTC), 1_000_000),  # history day 1
        cell(datetime(2028, 2, 9, 23, tzinfo=UTC), 3_000_000),  # history day 2
        cell(datetime(2028, 2, 10, 0, tzinfo=UTC), 250_000),  # today
        cell(datetime(2028, 2, 10, 11, tzinfo=UTC), 250_001),  # today, the current hour
    ]
    analysis = analyse(cells, Periods(NOW, 2))
    assert analysis.today_micros == 500_001
    assert analysis.month_micros == 500_000 + 4_000_000 + 500_001
    assert analysis.history_micros == 4_000_000
    assert analysis.rate_micros_per_day == 2_000_000
    # 5.000001 + 2 x 19.5 = 44.000001
    assert analysis.projected_month_micros == 44_000_001
    assert analysis.daily == [(date(2028, 2, 8), 1_000_000), (date(2028, 2, 9), 3_000_000)]
    assert analysis.window_micros == 4_500_001
    assert analysis.to_json()["projectedMonthUsd"] == "44.000001"


def test_a_rate_that_is_not_whole_micro_dollars_rounds_only_at_the_end() -> None:
    # 1 micro-dollar over 3 days: 1/3 per day, x 19.5 days = 6.5 -> 6 (half to even)
    cells = [cell(datetime(2028, 2, 8, tzinfo=UTC), 1)]
    analysis = analyse(cells, Periods(NOW, 3))
    assert analysis.rate_micros_per_day == Fraction(1, 3)
    assert analysis.projected_month_micros == 1 + 6


def test_breakdowns_rank_by_spend_with_exact_shares_calls_averages_and_maxima() -> None:
    hour = datetime(2028, 2, 9, 5, tzinfo=UTC)
    cells = [
        cell(hour, 3_000_000, calls=3, max_call_micros=2_000_000),
        cell(hour + H, 1_000_000, calls=2, max_call_micros=600_000),
        cell(hour, 1_000_000, model="claude-haiku-4-5", tool_name="summarise", calls=4),
        cell(hour, 0, model="claude-haiku-4-5", tool_name="noop", component="ops", calls=1),
    ]
    analysis = analyse(cells, Periods(NOW, 2), top=2)
    assert [(r.key, r.micros, r.share) for r in analysis.by_model] == [
        (("claude-opus-4-5",), 4_000_000, Fraction(4, 5)),
        (("claude-haiku-4-5",), 1_000_000, Fraction(1, 5)),
    ]
    assert [r.key for r in analysis.by_tool] == [("web_search",), ("summarise",), ("noop",)]
    assert [(r.key, r.calls) for r in analysis.by_component] == [(("agent",), 9), (("ops",), 1)]
    top = analysis.operations
    assert [r.key for r in top] == [
        ("claude-opus-4-5", "web_search", "agent"),
        ("claude-haiku-4-5", "summarise", "agent"),
    ]
    assert (top[0].calls, top[0].avg_call_micros, top[0].max_call_micros) == (5, 800_000, 2_000_000)
    assert analysis.to_json()["topOperations"][0]["avgCallUsd"] == "0.800000"


def test_the_hour_profile_sums_complete_days_by_utc_hour_and_finds_the_peak() -> None:
    cells = [cell(datetime(2028, 2, d, h, tzinfo=UTC), 100) for d in (8, 9) for h in range(24)]
    cells += [cell(datetime(2028, 2, 9, 14, tzinfo=UTC), 1_000, tool_name="burst")]
    cells += [cell(datetime(2028, 2, 10, 3, tzinfo=UTC), 5_000)]  # today: not in the profile
    analysis = analyse(cells, Periods(NOW, 2))
    assert analysis.hour_profile[14] == 1_200
    assert analysis.hour_profile[3] == 200
    assert analysis.peaks.hours == (14,)


def test_the_trend_counts_days_without_spend_as_zero() -> None:
    now = datetime(2028, 2, 11, 1, tzinfo=UTC)
    rising = [cell(datetime(2028, 2, 1 + d, tzinfo=UTC), 1_000_000 * d) for d in range(1, 10)]
    analysis = analyse(rising, Periods(now, 10))  # Feb 1 (no spend) .. Feb 10
    assert analysis.daily[0] == (date(2028, 2, 1), 0)
    assert analysis.trend.direction == "up"
    assert analysis.trend.slope_usd_per_day == pytest.approx(1.0)
    assert analysis.trend.days == 10
    flat = [cell(datetime(2028, 2, 1 + d, tzinfo=UTC), 1_000_000) for d in range(10)]
    assert analyse(flat, Periods(now, 10)).trend.direction == "flat"


def test_no_spend_at_all_is_a_report_of_zeros() -> None:
    analysis = analyse([], Periods(NOW, 7))
    assert (analysis.today_micros, analysis.month_micros, analysis.projected_month_micros) == (
        0,
        0,
        0,
    )
    assert analysis.by_model == []
    assert analysis.peaks.hours == ()
    assert analysis.trend.direction == "flat"


@pytest.fixture
def store(make_settings: Callable[..., Settings]) -> MetricsRuntime:
    runtime = MetricsRuntime(make_settings(), replica_id="t1")
    runtime.start()
    yield runtime  # type: ignore[misc]
    runtime.close()


def test_cells_come_back_from_the_query_engine_page_by_page_in_exact_micro_dollars(
    store: MetricsRuntime,
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    hour = now.replace(minute=0, second=0) - 3 * H
    events = [
        {"metric": "cost_updates", "timestamp": hour + timedelta(minutes=i % 50),
         "model": "m", "toolName": f"t{i % 3}", "component": "c", "inputTokens": 10,
         "outputTokens": 1, "costUsd": 0.1 if i < 10 else 0.000001}
        for i in range(40)
    ]  # fmt: skip
    assert store.record_events(events) == 40
    assert store.flush()
    cells = fetch_cells(store.run_query, hour - H, now, page_rows=2)  # 3 tools: 2 pages
    assert len(cells) == 3
    assert sum(c.calls for c in cells) == 40
    assert sum(c.micros for c in cells) == 10 * 100_000 + 30  # exactly 1.000030 USD
    assert {c.hour for c in cells} == {hour}
    assert sum(c.input_tokens for c in cells) == 400
    analysis = fetch_analysis(store.run_query, now, lookback_days=1)
    assert analysis.window_micros == 1_000_030
