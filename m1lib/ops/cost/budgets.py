"""Daily and monthly spend budgets: which levels are crossed, and raising each alert once per period.

Budgets come from M1_COST_BUDGET_DAILY_USD and M1_COST_BUDGET_MONTHLY_USD (empty: off). A period
(the UTC day, the UTC calendar month) crosses its soft level when the spend so far is at least
M1_COST_BUDGET_SOFT_RATIO (0.8) of the budget, its hard level at the whole budget; the comparison
is exact (micro-dollars against the budget times the ratio as a fraction). Spend is actual spend,
never the projection.

Once per period and level, across concurrent flow runs: the run that inserts the row (period kind,
period start, level) into ``cost_budget_alerts`` raises the alert; an insert that finds the row
(``ON CONFLICT DO NOTHING``) raises nothing. The row is committed before the alert is raised, so
a run that dies between the two loses that alert rather than doubling it. Alerts go through
``m1lib.alerts.raise_alert``: source ``cost-budget``, soft = warning, hard = critical. Crossing
both levels at once raises both (soft first). A budget changed within a period keeps that period's
rows: a level already raised is not raised again.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from fractions import Fraction
from typing import Any, Final, Literal

from sqlalchemy import Table

from m1lib.alerts import raise_alert
from m1lib.db.models import CostBudgetAlert
from m1lib.db.session import Database
from m1lib.db.upsert import upsert
from m1lib.ops.cost.analysis import MICROS_PER_USD, CostAnalysis, usd_text
from m1lib.settings import Settings

__all__ = [
    "ALERT_SOURCE",
    "BudgetPolicy",
    "BudgetStatus",
    "Level",
    "RaisedAlert",
    "budget_statuses",
    "claim",
    "raise_budget_alerts",
]

ALERT_SOURCE: Final = "cost-budget"
PeriodKind = Literal["day", "month"]
AlertFn = Callable[..., None]


class Level(StrEnum):
    SOFT = "soft"
    HARD = "hard"

    @property
    def alert_level(self) -> Literal["warning", "critical"]:
        return "warning" if self is Level.SOFT else "critical"


def _micros(amount: Decimal | None) -> int | None:
    return None if amount is None else int(amount * MICROS_PER_USD)


@dataclass(frozen=True, slots=True)
class BudgetPolicy:
    """The budgets in micro-dollars (None: off) and the soft ratio as an exact fraction."""

    daily_micros: int | None
    monthly_micros: int | None
    soft_ratio: Fraction

    @classmethod
    def from_settings(cls, settings: Settings) -> BudgetPolicy:
        cost = settings.cost
        return cls(
            _micros(cost.budget_daily_usd),
            _micros(cost.budget_monthly_usd),
            Fraction(str(cost.budget_soft_ratio)),  # 0.8 means 4/5, not the float's binary value
        )


@dataclass(frozen=True, slots=True)
class BudgetStatus:
    """One period's budget: what it allows, what is spent, which levels are crossed."""

    period: PeriodKind
    period_start: datetime
    budget_micros: int
    soft_ratio: Fraction
    spent_micros: int
    projected_micros: int | None  # the month's projection; None for a day

    @property
    def soft_micros(self) -> Fraction:
        return self.budget_micros * self.soft_ratio

    @property
    def crossed(self) -> tuple[Level, ...]:
        levels = []
        if self.spent_micros >= self.soft_micros:
            levels.append(Level.SOFT)
        if self.spent_micros >= self.budget_micros:
            levels.append(Level.HARD)
        return tuple(levels)

    @property
    def used_pct(self) -> float:
        return round(self.spent_micros * 100 / self.budget_micros, 2)

    def message(self, level: Level) -> str:
        what = (
            "budget"
            if level is Level.HARD
            else f"soft threshold ({float(self.soft_ratio * 100):g} %)"
        )
        period = "daily" if self.period == "day" else "monthly"
        return (
            f"{period} cost {what} reached: {usd_text(self.spent_micros)} spent of "
            f"{usd_text(self.budget_micros)} ({self.used_pct:g} %) in the {self.period} from "
            f"{self.period_start.isoformat()}"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "period": self.period,
            "periodStart": self.period_start.isoformat(),
            "budgetUsd": str(Decimal(self.budget_micros).scaleb(-6)),
            "softUsd": str(Decimal(math.ceil(self.soft_micros)).scaleb(-6)),
            "spentUsd": str(Decimal(self.spent_micros).scaleb(-6)),
            "usedPct": self.used_pct,
            "projectedUsd": None
            if self.projected_micros is None
            else str(Decimal(self.projected_micros).scaleb(-6)),
            "crossed": [level.value for level in self.crossed],
        }


def budget_statuses(analysis: CostAnalysis, policy: BudgetPolicy) -> list[BudgetStatus]:
    """The day's and the month's status, for each budget that is on (pure)."""
    periods = analysis.periods
    statuses = []
    if policy.daily_micros is not None:
        statuses.append(
            BudgetStatus(
                "day",
                periods.today_start,
                policy.daily_micros,
                policy.soft_ratio,
                analysis.today_micros,
                None,
            )
        )
    if policy.monthly_micros is not None:
        statuses.append(
            BudgetStatus(
                "month",
                periods.month_start,
                policy.monthly_micros,
                policy.soft_ratio,
                analysis.month_micros,
                analysis.projected_month_micros,
            )
        )
    return statuses


@dataclass(frozen=True, slots=True)
class RaisedAlert:
    period: PeriodKind
    period_start: datetime
    level: Level
    message: str

    def to_json(self) -> dict[str, Any]:
        return {
            "period": self.period,
            "periodStart": self.period_start.isoformat(),
            "level": self.level.value,
            "alertLevel": self.level.alert_level,
            "message": self.message,
        }


def claim(db: Database, status: BudgetStatus, level: Level, *, now: datetime) -> bool:
    """Insert the (period, start, level) row unless it exists; True when this call inserted it."""
    table: Table = CostBudgetAlert.__table__  # type: ignore[assignment]
    row = {
        "period_kind": status.period,
        "period_start": status.period_start,
        "level": level.value,
        "raised_at": now,
        "spent_micros": status.spent_micros,
        "budget_micros": status.budget_micros,
    }
    statement = upsert(
        db.engine.dialect, table, row, ["period_kind", "period_start", "level"]
    ).returning(table.c.level)
    with db.transaction() as session:
        return session.execute(statement).first() is not None


def raise_budget_alerts(
    db: Database,
    statuses: Sequence[BudgetStatus],
    *,
    now: datetime,
    alert: AlertFn = raise_alert,
) -> list[RaisedAlert]:
    """For each crossed level not yet raised in its period: claim its row, then raise the alert."""
    raised = []
    for status in statuses:
        for level in status.crossed:
            if not claim(db, status, level, now=now):
                continue
            message = status.message(level)
            alert(
                level.alert_level,
                ALERT_SOURCE,
                message,
                metadata={
                    "period": status.period,
                    "periodStart": status.period_start.isoformat(),
                    "level": level.value,
                    "spentUsd": str(Decimal(status.spent_micros).scaleb(-6)),
                    "budgetUsd": str(Decimal(status.budget_micros).scaleb(-6)),
                },
            )
            raised.append(RaisedAlert(status.period, status.period_start, level, message))
    return raised
