"""Spend analysis of ``cost_updates``, read through the query engine, in exact micro-dollars.

One query shape serves everything: the spend of each (model, toolName, component) in each UTC
hour (``interval`` 1h), paged by ``limit``/``offset``, asked of whatever ``run_query`` the caller
hands in (the flow: ``m1lib.metrics.run_query``, which a flow-run process forwards to the API; the
CLI: the API's ``POST /api/m1/dashboard/query``). Every figure below is folded from those cells.

Money is never a float past the query. Each event's ``costUsd`` is rounded to the micro-dollar
when recorded, so a cell's ``sum`` is a float sum of multiples of 1e-6; it is turned into an
integer number of micro-dollars with ``round(x * 1e6)`` per cell, and everything after that (the
totals, shares, rates and the projection) is integer or ``Fraction`` arithmetic. A float sum of n
values totalling S USD is off by at most about n * S * 2**-52, far below half a micro-dollar
while n * S stays under 2e9 (a million calls and $2,000 in one hour of one operation), so the
rounding gives back the exact micro-dollars.

Periods are UTC: today is [00:00, now), the month [the 1st 00:00, now); the history window is the
``lookback_days`` complete days before today. The spend rate is the history's spend per day, and
the projected month is ``spent this month + rate x the exact days left in the month`` (from now
to the 1st of the next month, 28 to 31 day months alike).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Any, Final, Literal

from m1lib.errors import InputError
from m1lib.metrics.detect import trend as fit_trend
from m1lib.metrics.result import QueryResult
from m1lib.ops.cost.peaks import PEAK_K, PeakHours, find_peaks

__all__ = [
    "MICROS_PER_USD",
    "CostAnalysis",
    "CostCell",
    "Periods",
    "QueryFn",
    "SpendRow",
    "SpendTrend",
    "analyse",
    "cells_query",
    "fetch_analysis",
    "fetch_cells",
    "month_bounds",
    "to_micros",
    "usd",
    "usd_text",
]

QueryFn = Callable[[Mapping[str, Any]], QueryResult]
MICROS_PER_USD: Final = 1_000_000
PAGE_ROWS: Final = 5_000  # under the default M1_QUERY_MAX_ROWS (50,000), so any server answers
DAY: Final = timedelta(days=1)
Dimension = Literal["model", "toolName", "component"]
DIMENSIONS: Final[tuple[Dimension, ...]] = ("model", "toolName", "component")


def to_micros(value: float | int | None) -> int:
    """USD (a cell's float sum) as whole micro-dollars: ``round(value * 1e6)``; null is 0."""
    return 0 if value is None else round(value * MICROS_PER_USD)


def usd(micros: int) -> Decimal:
    """Micro-dollars as an exact Decimal of USD (6 decimals)."""
    return Decimal(micros).scaleb(-6)


def usd_text(micros: int) -> str:
    """Micro-dollars as text: ``$1,234.567890``."""
    return f"${usd(micros):,.6f}"


def month_bounds(moment: datetime) -> tuple[datetime, datetime]:
    """The UTC calendar month holding ``moment``: [its 1st 00:00, the next month's 1st 00:00)."""
    moment = moment.astimezone(UTC)
    start = datetime(moment.year, moment.month, 1, tzinfo=UTC)
    following = (
        datetime(moment.year + 1, 1, 1, tzinfo=UTC)
        if moment.month == 12
        else datetime(moment.year, moment.month + 1, 1, tzinfo=UTC)
    )
    return start, following


def _aware(name: str, moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise InputError(name, "is a naive datetime", ["an aware datetime (UTC)"])
    return moment.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class Periods:
    """The UTC periods one analysis at ``now`` speaks of."""

    now: datetime
    lookback_days: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "now", _aware("now", self.now))
        if not 1 <= self.lookback_days <= 90:
            raise InputError("lookback_days", f"{self.lookback_days} is out of range", ["1-90"])

    @property
    def today_start(self) -> datetime:
        return self.now.replace(hour=0, minute=0, second=0, microsecond=0)

    @property
    def month_start(self) -> datetime:
        return month_bounds(self.now)[0]

    @property
    def next_month_start(self) -> datetime:
        return month_bounds(self.now)[1]

    @property
    def history_start(self) -> datetime:
        """The first of the ``lookback_days`` complete days before today."""
        return self.today_start - self.lookback_days * DAY

    @property
    def fetch_start(self) -> datetime:
        return min(self.month_start, self.history_start)

    @property
    def days_left_in_month(self) -> Fraction:
        """Exact days from now to the next month's 1st 00:00 UTC (microsecond resolution)."""
        left = self.next_month_start - self.now
        micros = (left.days * 86_400 + left.seconds) * 1_000_000 + left.microseconds
        return Fraction(micros, 86_400 * 1_000_000)

    def to_json(self) -> dict[str, Any]:
        return {
            "now": self.now.isoformat(),
            "todayStart": self.today_start.isoformat(),
            "monthStart": self.month_start.isoformat(),
            "nextMonthStart": self.next_month_start.isoformat(),
            "historyStart": self.history_start.isoformat(),
            "lookbackDays": self.lookback_days,
            "daysLeftInMonth": round(float(self.days_left_in_month), 6),
        }


@dataclass(frozen=True, slots=True)
class CostCell:
    """The spend of one model, tool and component in one UTC hour (one row of the query)."""

    hour: datetime
    model: str
    tool_name: str
    component: str
    calls: int
    micros: int
    input_tokens: int
    output_tokens: int
    max_call_micros: int

    def key(self, dimension: Dimension) -> str:
        return {"model": self.model, "toolName": self.tool_name, "component": self.component}[
            dimension
        ]


def cells_query(start: datetime, end: datetime, *, limit: int, offset: int) -> dict[str, Any]:
    """The query for one page of hourly cells in [start, end)."""
    return {
        "metric": "cost_updates",
        "timeRange": {"from": start.isoformat(), "to": end.isoformat()},
        "interval": "1h",
        "groupBy": list(DIMENSIONS),
        "aggregations": [
            "count",
            {"op": "sum", "field": "costUsd", "as": "spendUsd"},
            {"op": "max", "field": "costUsd", "as": "maxCallUsd"},
            {"op": "sum", "field": "inputTokens", "as": "inputTokens"},
            {"op": "sum", "field": "outputTokens", "as": "outputTokens"},
        ],
        "limit": limit,
        "offset": offset,
    }


def _cell(row: Mapping[str, Any]) -> CostCell:
    return CostCell(
        hour=row["bucket"],
        model=str(row["model"]),
        tool_name=str(row["toolName"]),
        component=str(row["component"]),
        calls=int(row["count"]),
        micros=to_micros(row["spendUsd"]),
        input_tokens=int(row["inputTokens"] or 0),
        output_tokens=int(row["outputTokens"] or 0),
        max_call_micros=to_micros(row["maxCallUsd"]),
    )


def fetch_cells(
    query: QueryFn, start: datetime, end: datetime, *, page_rows: int = PAGE_ROWS
) -> list[CostCell]:
    """Every hourly cell in [start, end), page by page until a page comes back short."""
    cells: list[CostCell] = []
    while True:
        rows = query(cells_query(start, end, limit=page_rows, offset=len(cells))).rows
        cells.extend(_cell(row) for row in rows)
        if len(rows) < page_rows:
            return cells


@dataclass(frozen=True, slots=True)
class SpendRow:
    """Spend of one group (a model, a tool, a component, or an operation: all three)."""

    key: tuple[str, ...]
    calls: int
    micros: int
    input_tokens: int
    output_tokens: int
    max_call_micros: int
    share: Fraction  # of the total it is ranked in (0 when that is 0)

    @property
    def avg_call_micros(self) -> int:
        return round(Fraction(self.micros, self.calls)) if self.calls else 0

    def to_json(self, names: Sequence[str]) -> dict[str, Any]:
        return {
            **dict(zip(names, self.key, strict=True)),
            "calls": self.calls,
            "spendUsd": str(usd(self.micros)),
            "sharePct": round(float(self.share) * 100, 2),
            "avgCallUsd": str(usd(self.avg_call_micros)),
            "maxCallUsd": str(usd(self.max_call_micros)),
            "inputTokens": self.input_tokens,
            "outputTokens": self.output_tokens,
        }


def spend_by(
    cells: Iterable[CostCell], dimensions: Sequence[Dimension], *, top: int | None = None
) -> list[SpendRow]:
    """Cells folded by ``dimensions``, largest spend first (ties by key), with shares."""
    sums: dict[tuple[str, ...], list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0])
    for cell in cells:
        acc = sums[tuple(cell.key(d) for d in dimensions)]
        acc[0] += cell.calls
        acc[1] += cell.micros
        acc[2] += cell.input_tokens
        acc[3] += cell.output_tokens
        acc[4] = max(acc[4], cell.max_call_micros)
    total = sum(acc[1] for acc in sums.values())
    rows = [
        SpendRow(key, a[0], a[1], a[2], a[3], a[4], Fraction(a[1], total) if total else Fraction(0))
        for key, a in sums.items()
    ]
    rows.sort(key=lambda row: (-row.micros, row.key))
    return rows if top is None else rows[:top]


@dataclass(frozen=True, slots=True)
class SpendTrend:
    """Least-squares trend of daily spend over the history (zero days included), with the
    query engine's t-test (``m1lib.metrics.detect.trend``, significance 0.05)."""

    direction: Literal["up", "down", "flat"]
    slope_usd_per_day: float
    change_pct: float | None  # fitted last day vs fitted first day
    p_value: float | None
    days: int

    def to_json(self) -> dict[str, Any]:
        return {
            "direction": self.direction,
            "slopeUsdPerDay": round(self.slope_usd_per_day, 6),
            "changePct": None if self.change_pct is None else round(self.change_pct, 2),
            "pValue": None if self.p_value is None else round(self.p_value, 6),
            "days": self.days,
        }


@dataclass(frozen=True)
class CostAnalysis:
    """Everything the optimize-cost report says about spend, all from one set of cells."""

    periods: Periods
    today_micros: int
    month_micros: int
    history_micros: int  # the lookback_days complete days before today
    window_micros: int  # history + today: what the breakdowns cover
    window_calls: int
    rate_micros_per_day: Fraction  # history_micros / lookback_days
    projected_month_micros: int
    by_model: list[SpendRow]
    by_tool: list[SpendRow]
    by_component: list[SpendRow]
    operations: list[SpendRow]  # (model, toolName, component), the top ones
    daily: list[tuple[date, int]]  # each history day, zero days included
    hour_profile: tuple[int, ...]  # history spend per UTC hour of day (24 bins)
    trend: SpendTrend
    peaks: PeakHours
    history_cells: list[CostCell] = field(repr=False)  # what recommendations are computed from

    def to_json(self) -> dict[str, Any]:
        return {
            "periods": self.periods.to_json(),
            "todayUsd": str(usd(self.today_micros)),
            "monthToDateUsd": str(usd(self.month_micros)),
            "historyUsd": str(usd(self.history_micros)),
            "windowUsd": str(usd(self.window_micros)),
            "windowCalls": self.window_calls,
            "rateUsdPerDay": str(usd(round(self.rate_micros_per_day))),
            "projectedMonthUsd": str(usd(self.projected_month_micros)),
            "byModel": [row.to_json(["model"]) for row in self.by_model],
            "byTool": [row.to_json(["toolName"]) for row in self.by_tool],
            "byComponent": [row.to_json(["component"]) for row in self.by_component],
            "topOperations": [row.to_json(list(DIMENSIONS)) for row in self.operations],
            "daily": [{"day": day.isoformat(), "spendUsd": str(usd(m))} for day, m in self.daily],
            "hourOfDay": [
                {"hour": hour, "spendUsd": str(usd(m))} for hour, m in enumerate(self.hour_profile)
            ],
            "trend": self.trend.to_json(),
            "peaks": self.peaks.to_json(),
        }


def analyse(
    cells: Sequence[CostCell], periods: Periods, *, top: int = 10, peak_k: float = PEAK_K
) -> CostAnalysis:
    """Fold the cells into the report's figures (pure: no I/O, no clock)."""
    window = [c for c in cells if periods.history_start <= c.hour < periods.now]
    history = [c for c in window if c.hour < periods.today_start]
    today = sum(c.micros for c in window if c.hour >= periods.today_start)
    month = sum(c.micros for c in cells if periods.month_start <= c.hour < periods.now)
    history_micros = sum(c.micros for c in history)
    rate = Fraction(history_micros, periods.lookback_days)
    projected = month + round(rate * periods.days_left_in_month)

    per_day: dict[date, int] = defaultdict(int)
    profile = [0] * 24
    for cell in history:
        per_day[cell.hour.date()] += cell.micros
        profile[cell.hour.hour] += cell.micros
    days = [(periods.history_start + i * DAY).date() for i in range(periods.lookback_days)]
    daily = [(day, per_day.get(day, 0)) for day in days]
    fit = fit_trend([m / MICROS_PER_USD for _, m in daily])
    trend = SpendTrend(fit.direction, fit.slope, fit.change_pct, fit.p_value, len(daily))
    return CostAnalysis(
        periods=periods,
        today_micros=today,
        month_micros=month,
        history_micros=history_micros,
        window_micros=sum(c.micros for c in window),
        window_calls=sum(c.calls for c in window),
        rate_micros_per_day=rate,
        projected_month_micros=projected,
        by_model=spend_by(window, ["model"]),
        by_tool=spend_by(window, ["toolName"]),
        by_component=spend_by(window, ["component"]),
        operations=spend_by(window, list(DIMENSIONS), top=top),
        daily=daily,
        hour_profile=tuple(profile),
        trend=trend,
        peaks=find_peaks(profile, k=peak_k),
        history_cells=history,
    )


def fetch_analysis(
    query: QueryFn,
    now: datetime,
    *,
    lookback_days: int = 7,
    top: int = 10,
    peak_k: float = PEAK_K,
) -> CostAnalysis:
    """Read the cells from the month's start (or the history's, if earlier) to ``now`` through
    ``query`` and analyse them."""
    periods = Periods(now, lookback_days)
    cells = fetch_cells(query, periods.fetch_start, periods.now)
    return analyse(cells, periods, top=top, peak_k=peak_k)
