"""The guard of applied TTL changes: revert one when hit rate, error rate or staleness got worse.

:func:`judge` is the pure decision: before and after figures and a tolerance give a verdict.
:func:`guard_check` runs it over every change that has been in force for the settle window and
was not judged yet, records the after figures, and reverts the harmful ones (the tool's rule back
to what it was, ``reverted_at`` and the reason in the change log, one ``cache.policy.reload``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import delete, select

from m1lib.db.models import CacheTtlChange, CacheTtlPolicy
from m1lib.errors import InputError
from m1lib.ops.cost.policy import Figures
from m1lib.ops.cost.policy_store import ChangeRecord, notify_replicas, to_policy, write_rule

if TYPE_CHECKING:
    from m1lib.db.session import Database
    from m1lib.settings import Settings

__all__ = ["GuardOutcome", "Tolerance", "Verdict", "guard_check", "judge"]


@dataclass(frozen=True)
class Tolerance:
    """How much worse a figure may get (absolute, as a fraction 0-1) before the guard reverts."""

    hit_rate_drop: float = 0.05
    error_rate_rise: float = 0.02
    stale_rate_rise: float = 0.05

    def __post_init__(self) -> None:
        for name in ("hit_rate_drop", "error_rate_rise", "stale_rate_rise"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
                raise InputError(name, f"{value!r} is out of range", ["a fraction 0-1"])


@dataclass(frozen=True)
class Verdict:
    """The guard's decision on one change: revert or keep, and why."""

    revert: bool
    reasons: tuple[str, ...] = field(default=())

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons) if self.reasons else "no figure got worse"


def judge(before: Figures | None, after: Figures | None, tolerance: Tolerance) -> Verdict:
    """Revert when hit rate fell, or error or stale rate rose, by more than the tolerance.

    A figure missing on either side is not judged (nothing to compare), so a change without
    figures is kept.
    """
    if before is None or after is None:
        return Verdict(False, ("no figures to compare",))
    checks = (
        ("hit rate fell", before.hit_rate, after.hit_rate, -1, tolerance.hit_rate_drop),
        ("error rate rose", before.error_rate, after.error_rate, 1, tolerance.error_rate_rise),
        ("stale rate rose", before.stale_rate, after.stale_rate, 1, tolerance.stale_rate_rise),
    )
    reasons = [
        f"{what} {old:.3f} -> {new:.3f}"
        for what, old, new, worse, allowed in checks
        if old is not None and new is not None and (new - old) * worse > allowed
    ]
    return Verdict(bool(reasons), tuple(reasons))


@dataclass(frozen=True)
class GuardOutcome:
    """One judged change: its log row, the after figures and the verdict."""

    change: ChangeRecord
    figures_after: Figures | None
    verdict: Verdict
    reverted: bool  # False for a revert verdict when the rule had changed again since

    def to_json(self) -> dict[str, object]:
        return {
            "change_id": self.change.id,
            "tool": self.change.tool,
            "figures_before": None
            if self.change.figures_before is None
            else self.change.figures_before.to_json(),
            "figures_after": None if self.figures_after is None else self.figures_after.to_json(),
            "revert": self.verdict.revert,
            "reverted": self.reverted,
            "reason": self.verdict.reason,
        }


FiguresSource = Callable[[str, datetime], Figures | None] | Mapping[str, Figures]
"""The after figures of a tool since a time (the change's applied_at), or a mapping by tool."""


def guard_check(
    db: Database,
    settings: Settings,
    figures: FiguresSource,
    *,
    settle_s: float,
    tolerance: Tolerance | None = None,
    actor: str = "ttl-guard",
    now: datetime | None = None,
    dry_run: bool = False,
) -> list[GuardOutcome]:
    """Judge every unjudged change applied at least ``settle_s`` ago; revert the harmful ones.

    A change is reverted only while the tool's rule is still the one it set (a later change wins
    and is judged on its own). With ``dry_run`` nothing is written and no command issued.
    """
    if isinstance(settle_s, bool) or not isinstance(settle_s, int | float) or settle_s < 0:
        raise InputError("settle_s", f"{settle_s!r} is out of range", ["a number of seconds >= 0"])
    tolerance = tolerance or Tolerance()
    at = now or datetime.now(UTC)
    cutoff = at - timedelta(seconds=settle_s)
    query = (
        select(CacheTtlChange)
        .where(CacheTtlChange.checked_at.is_(None), CacheTtlChange.applied_at <= cutoff)
        .order_by(CacheTtlChange.id)
    )
    with db.transaction() as session:
        pending = [ChangeRecord.from_row(row) for row in session.scalars(query).all()]
    outcomes: list[GuardOutcome] = []
    reverted_any = False
    for change in pending:
        if isinstance(figures, Mapping):
            after_figures = figures.get(change.tool)
        else:
            after_figures = figures(change.tool, change.applied_at)
        verdict = judge(change.figures_before, after_figures, tolerance)
        reverted = False
        if not dry_run:
            reverted = _record(db, change, after_figures, verdict, actor=actor, at=at)
            reverted_any = reverted_any or reverted
        outcomes.append(GuardOutcome(change, after_figures, verdict, reverted))
    if reverted_any:
        notify_replicas(db, settings, actor=actor)
    return outcomes


def _record(
    db: Database,
    change: ChangeRecord,
    figures_after: Figures | None,
    verdict: Verdict,
    *,
    actor: str,
    at: datetime,
) -> bool:
    """Write the verdict on the change's row; on revert restore the rule; True when reverted."""
    with db.transaction() as session:
        row = session.get(CacheTtlChange, change.id, with_for_update=True)
        if row is None or row.checked_at is not None:  # another guard run judged it
            return False
        row.checked_at = at
        row.figures_after = None if figures_after is None else figures_after.to_json()
        if not verdict.revert:
            return False
        current = session.get(CacheTtlPolicy, change.tool, with_for_update=True)
        still_ours = (current is None and change.after is None) or (
            current is not None
            and change.after is not None
            and to_policy(current).settings_json() == change.after.settings_json()
        )
        if not still_ours:
            row.reason = f"{row.reason}; guard: {verdict.reason}, not reverted (changed since)"[
                :500
            ]
            return False
        if change.before is None:
            session.execute(delete(CacheTtlPolicy).where(CacheTtlPolicy.tool == change.tool))
        else:
            write_rule(session, change.before, actor, at)
        row.reverted_at = at
        row.reason = f"{row.reason}; reverted: {verdict.reason}"[:500]
        return True
