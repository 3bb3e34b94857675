"""Budgets: the levels crossed (exact), and each alert raised once per period on SQLite and the real
PostgreSQL, also by two runs racing; alerts are error_alerts events of source cost-budget."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from typing import Any

import pytest
from sqlalchemy import func, select

from m1lib.db import migrate
from m1lib.db.models import CostBudgetAlert
from m1lib.db.session import Database
from m1lib.metrics import MetricsRuntime
from m1lib.ops.cost.analysis import Periods, analyse
from m1lib.ops.cost.budgets import (
    ALERT_SOURCE,
    BudgetPolicy,
    BudgetStatus,
    Level,
    budget_statuses,
    raise_budget_alerts,
)
from m1lib.settings import Settings
from tests.m1lib.ops.cost_factories import cell

DAY = datetime(2026, 12, 3, tzinfo=UTC)
NOW = DAY + timedelta(hours=15)


def day(
    spent: int, budget: int = 10_000_000, ratio: str = "0.8", start: datetime = DAY
) -> BudgetStatus:
    return BudgetStatus("day", start, budget, Fraction(ratio), spent, None)


def test_levels_are_crossed_at_the_soft_share_and_at_the_whole_budget() -> None:
    assert day(7_999_999).crossed == ()
    assert day(8_000_000).crossed == (Level.SOFT,)
    assert day(9_999_999).crossed == (Level.SOFT,)
    assert day(10_000_000).crossed == (Level.SOFT, Level.HARD)


def test_the_soft_level_is_exact_where_a_float_would_miss_it() -> None:
    assert 0.07 * 100 > 7  # the float product overshoots
    assert day(7, budget=100, ratio="0.07").crossed == (Level.SOFT,)


def test_the_policy_reads_the_settings_and_statuses_exist_only_for_budgets_that_are_on() -> None:
    settings = Settings(_env_file=None, cost={"budget_daily_usd": "12.5", "budget_soft_ratio": 0.3})
    policy = BudgetPolicy.from_settings(settings)
    assert policy == BudgetPolicy(12_500_000, None, Fraction(3, 10))
    cells = [cell(DAY - timedelta(hours=1), 4_000_000), cell(DAY + timedelta(hours=2), 3_750_000)]
    analysis = analyse(cells, Periods(NOW, 1))
    (status,) = budget_statuses(analysis, policy)
    assert (status.period, status.period_start, status.spent_micros) == ("day", DAY, 3_750_000)
    assert status.crossed == (Level.SOFT,)
    assert status.to_json()["softUsd"] == "3.750000"
    both = BudgetPolicy(1, 7_000_000, Fraction(4, 5))
    month = budget_statuses(analysis, both)[1]
    assert (month.period, month.period_start) == ("month", datetime(2026, 12, 1, tzinfo=UTC))
    assert (month.spent_micros, month.crossed) == (7_750_000, (Level.SOFT, Level.HARD))
    assert month.projected_micros == analysis.projected_month_micros
    assert budget_statuses(analysis, BudgetPolicy(None, None, Fraction(4, 5))) == []


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def open_db(
    request: pytest.FixtureRequest, make_settings: Callable[..., Settings]
) -> Iterator[Callable[[], Database]]:
    """Databases on one migrated URL: each call is another process's handle."""
    url = request.getfixturevalue("fresh_pg_url") if request.param == "postgresql" else None
    settings = make_settings(**({"database": {"url": url}} if url else {}))
    made: list[Database] = []

    def factory() -> Database:
        made.append(Database(settings))
        return made[-1]

    migrate.upgrade(factory())
    yield factory
    for db in made:
        db.dispose()


class Alerts:
    """Records what would go to raise_alert."""

    def __init__(self) -> None:
        self.raised: list[tuple[str, str, str, dict[str, Any]]] = []
        self._lock = threading.Lock()

    def __call__(self, level: str, source: str, message: str, *, metadata: dict[str, Any]) -> None:
        with self._lock:
            self.raised.append((level, source, message, metadata))


def test_each_level_is_raised_once_per_period_at_the_moment_it_is_crossed(
    open_db: Callable[[], Database],
) -> None:
    db, alerts = open_db(), Alerts()
    assert raise_budget_alerts(db, [day(7_000_000)], now=NOW, alert=alerts) == []
    first = raise_budget_alerts(db, [day(8_500_000)], now=NOW, alert=alerts)
    assert [(a.period, a.level) for a in first] == [("day", Level.SOFT)]
    assert raise_budget_alerts(db, [day(9_000_000)], now=NOW, alert=alerts) == []  # once
    hard = raise_budget_alerts(db, [day(12_000_000)], now=NOW, alert=alerts)
    assert [a.level for a in hard] == [Level.HARD]
    assert raise_budget_alerts(open_db(), [day(13_000_000)], now=NOW, alert=alerts) == []
    assert [(level, source) for level, source, _m, _d in alerts.raised] == [
        ("warning", ALERT_SOURCE), ("critical", ALERT_SOURCE)
    ]  # fmt: skip
    _level, _source, message, metadata = alerts.raised[1]
    assert message == (
        "daily cost budget reached: $12.000000 spent of $10.000000 (120 %) in the day from "
        "2026-12-03T00:00:00+00:00"
    )
    assert metadata == {"period": "day", "periodStart": "2026-12-03T00:00:00+00:00",
                        "level": "hard", "spentUsd": "12.000000", "budgetUsd": "10.000000"}  # fmt: skip
    # the next day is a new period; crossing both levels at once raises both, soft first
    tomorrow = DAY + timedelta(days=1)
    again = raise_budget_alerts(db, [day(10_000_000, start=tomorrow)], now=NOW, alert=alerts)
    assert [(a.period_start, a.level) for a in again] == [
        (tomorrow, Level.SOFT),
        (tomorrow, Level.HARD),
    ]
    month = BudgetStatus("month", datetime(2026, 12, 1, tzinfo=UTC), 100, Fraction(4, 5), 80, 200)
    assert [a.level for a in raise_budget_alerts(db, [month], now=NOW, alert=alerts)] == [
        Level.SOFT
    ]
    with db.transaction() as session:
        assert session.scalar(select(func.count()).select_from(CostBudgetAlert)) == 5


@pytest.mark.postgres
def test_two_runs_racing_raise_each_alert_once(
    fresh_pg_url: str, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(database={"url": fresh_pg_url})
    migrate.upgrade(Database(settings))
    alerts = Alerts()
    periods = [DAY + timedelta(days=i) for i in range(20)]
    statuses = [day(10_000_000, start=start) for start in periods]  # soft and hard each
    barrier = threading.Barrier(2)
    counts: list[int] = []

    def run() -> None:
        with Database(settings) as db:
            barrier.wait()
            counts.append(len(raise_budget_alerts(db, statuses, now=NOW, alert=alerts)))

    racers = [threading.Thread(target=run) for _ in range(2)]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join(60)
    assert sum(counts) == 40 == len(alerts.raised)
    raised = {(d["periodStart"], d["level"]) for _l, _s, _m, d in alerts.raised}
    assert len(raised) == 40


def test_the_alert_is_an_error_alerts_event_of_source_cost_budget(
    open_db: Callable[[], Database], metrics: MetricsRuntime
) -> None:
    raise_budget_alerts(open_db(), [day(10_000_000)], now=NOW)
    assert metrics.flush()
    rows = metrics.run_query(
        {"metric": "error_alerts", "timeRange": "1h", "groupBy": ["level", "source"]}
    ).rows
    assert rows == [
        {"level": "critical", "source": "cost-budget", "count": 1},
        {"level": "warning", "source": "cost-budget", "count": 1},
    ]
