"""The cache TTL policy in the database: read it, set or reset a tool, apply changes, log them.

Every write bumps the tool's ``version``, logs the change in ``cache_ttl_changes`` (before and
after, with the figures given) and issues the ``cache.policy.reload`` control command, so every
replica re-reads the policy at once; services catch up within ``M1_CACHE_POLICY_REFRESH_S``.
A dry run (:func:`apply_changes` with ``dry_run=True``) writes nothing and issues nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sqlalchemy import delete, select

from m1lib.control import issue_command
from m1lib.db.models import CacheTtlChange, CacheTtlPolicy
from m1lib.errors import InputError
from m1lib.ops.cost.policy import RELOAD_COMMAND, Figures, PolicyChange, ToolTtl, check_policy
from m1lib.text import TOOL_MAX, check_text

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from m1lib.db.session import Database
    from m1lib.settings import Settings

__all__ = [
    "AppliedChanges",
    "ChangeRecord",
    "apply_changes",
    "list_changes",
    "load_policy",
    "notify_replicas",
    "reset_tool",
    "set_tool",
    "to_policy",
    "write_rule",
]

_ACTOR_MAX = 128
_REASON_MAX = 500


def _now() -> datetime:
    return datetime.now(UTC)


def to_policy(row: CacheTtlPolicy) -> ToolTtl:
    """The one place a policy row becomes a rule."""
    hours = None
    if row.peak_start_hour is not None and row.peak_end_hour is not None:
        hours = (row.peak_start_hour, row.peak_end_hour)
    return ToolTtl(
        tool=row.tool,
        ttl_s=row.ttl_s,
        staleness_budget_s=row.staleness_budget_s,
        peak_ttl_s=row.peak_ttl_s,
        offpeak_ttl_s=row.offpeak_ttl_s,
        peak_hours=hours,
        stale_while_revalidate_s=row.stale_while_revalidate_s,
        version=row.version,
        updated_at=row.updated_at,
        updated_by=row.updated_by,
    )


@dataclass(frozen=True)
class ChangeRecord:
    """One row of the change log."""

    id: int
    tool: str
    before: ToolTtl | None
    after: ToolTtl | None
    figures_before: Figures | None
    figures_after: Figures | None
    applied_by: str
    applied_at: datetime
    checked_at: datetime | None
    reverted_at: datetime | None
    reason: str

    @classmethod
    def from_row(cls, row: CacheTtlChange) -> ChangeRecord:
        return cls(
            id=int(row.id),
            tool=row.tool,
            before=None if row.before is None else ToolTtl.from_settings_json(row.tool, row.before),
            after=None if row.after is None else ToolTtl.from_settings_json(row.tool, row.after),
            figures_before=Figures.from_json(row.figures_before),
            figures_after=Figures.from_json(row.figures_after),
            applied_by=row.applied_by,
            applied_at=row.applied_at,
            checked_at=row.checked_at,
            reverted_at=row.reverted_at,
            reason=row.reason,
        )

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "tool": self.tool,
            "before": None if self.before is None else self.before.settings_json(),
            "after": None if self.after is None else self.after.settings_json(),
            "figures_before": None
            if self.figures_before is None
            else self.figures_before.to_json(),
            "figures_after": None if self.figures_after is None else self.figures_after.to_json(),
            "applied_by": self.applied_by,
            "applied_at": self.applied_at.isoformat(),
            "checked_at": None if self.checked_at is None else self.checked_at.isoformat(),
            "reverted_at": None if self.reverted_at is None else self.reverted_at.isoformat(),
            "reason": self.reason,
        }


@dataclass(frozen=True)
class AppliedChanges:
    """What :func:`apply_changes` did: the changes (as recommended), their log ids, the command."""

    dry_run: bool
    changes: tuple[PolicyChange, ...]
    change_ids: tuple[int, ...] = ()
    command_id: int | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "dry_run": self.dry_run,
            "changes": [change.to_json() for change in self.changes],
            "change_ids": list(self.change_ids),
            "command_id": self.command_id,
        }


def load_policy(db: Database) -> dict[str, ToolTtl]:
    """Every tool's rule, by tool."""
    with db.transaction() as session:
        rows = session.scalars(select(CacheTtlPolicy).order_by(CacheTtlPolicy.tool)).all()
        return {row.tool: to_policy(row) for row in rows}


def list_changes(
    db: Database, *, tool: str | None = None, limit: int = 50, unchecked: bool = False
) -> list[ChangeRecord]:
    """The newest change log rows first (of ``tool``; ``unchecked``: not yet judged by the guard)."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 1000:
        raise InputError("limit", f"{limit!r} is out of range", ["an integer 1-1000"])
    query = select(CacheTtlChange).order_by(CacheTtlChange.id.desc()).limit(limit)
    if tool is not None:
        query = query.where(CacheTtlChange.tool == tool)
    if unchecked:
        query = query.where(CacheTtlChange.checked_at.is_(None))
    with db.transaction() as session:
        return [ChangeRecord.from_row(row) for row in session.scalars(query).all()]


def _check_actor(actor: str) -> None:
    check_text("actor", actor, _ACTOR_MAX, required=True)


def write_rule(session: Session, policy: ToolTtl, actor: str, now: datetime) -> ToolTtl:
    """Upsert one rule (version + 1) under a row lock in the caller's transaction; returns it as
    stored. Callers log the change and notify the replicas."""
    row = session.get(CacheTtlPolicy, policy.tool, with_for_update=True)
    if row is None:
        row = CacheTtlPolicy(tool=policy.tool, version=0)
        session.add(row)
    row.ttl_s = policy.ttl_s
    row.staleness_budget_s = policy.staleness_budget_s
    row.peak_ttl_s = policy.peak_ttl_s
    row.offpeak_ttl_s = policy.offpeak_ttl_s
    row.peak_start_hour = None if policy.peak_hours is None else policy.peak_hours[0]
    row.peak_end_hour = None if policy.peak_hours is None else policy.peak_hours[1]
    row.stale_while_revalidate_s = policy.stale_while_revalidate_s
    row.updated_at = now
    row.updated_by = actor
    row.version = (row.version or 0) + 1
    session.flush()
    return to_policy(row)


def _log(
    session: Session,
    *,
    tool: str,
    before: ToolTtl | None,
    after: ToolTtl | None,
    figures: Figures | None,
    actor: str,
    now: datetime,
    reason: str,
    guarded: bool = False,
) -> int:
    """Log one change; only ``guarded`` ones (applied by the optimiser) wait for the guard's
    verdict, a person's set or reset counts as judged already."""
    entry = CacheTtlChange(
        tool=tool,
        before=None if before is None else before.settings_json(),
        after=None if after is None else after.settings_json(),
        figures_before=None if figures is None else figures.to_json(),
        figures_after=None,
        applied_by=actor,
        applied_at=now,
        checked_at=None if guarded else now,
        reason=reason[:_REASON_MAX],
    )
    session.add(entry)
    session.flush()
    return int(entry.id)


def notify_replicas(db: Database, settings: Settings, *, actor: str) -> int:
    """Issue ``cache.policy.reload``: every replica re-reads the policy now; its command id."""
    return issue_command(db, RELOAD_COMMAND, {}, created_by=actor, settings=settings)


def set_tool(
    db: Database, settings: Settings, policy: ToolTtl, *, actor: str, reason: str = "set by hand"
) -> ToolTtl:
    """Store one tool's rule (checked: InputError naming the field), log it, tell the replicas."""
    _check_actor(actor)
    check_policy(policy)
    now = _now()
    with db.transaction() as session:
        existing = session.get(CacheTtlPolicy, policy.tool, with_for_update=True)
        before = None if existing is None else to_policy(existing)
        stored = write_rule(session, policy, actor, now)
        _log(
            session,
            tool=policy.tool,
            before=before,
            after=stored,
            figures=None,
            actor=actor,
            now=now,
            reason=reason,
        )
    notify_replicas(db, settings, actor=actor)
    return stored


def reset_tool(db: Database, settings: Settings, tool: str, *, actor: str) -> bool:
    """Remove a tool's rule (its calls go back to the default TTL); False when it had none."""
    _check_actor(actor)
    check_text("tool", tool, TOOL_MAX, required=True)
    now = _now()
    with db.transaction() as session:
        existing = session.get(CacheTtlPolicy, tool, with_for_update=True)
        if existing is None:
            return False
        before = to_policy(existing)
        session.execute(delete(CacheTtlPolicy).where(CacheTtlPolicy.tool == tool))
        _log(
            session,
            tool=tool,
            before=before,
            after=None,
            figures=None,
            actor=actor,
            now=now,
            reason="reset",
        )
    notify_replicas(db, settings, actor=actor)
    return True


def apply_changes(
    db: Database,
    settings: Settings,
    changes: Sequence[PolicyChange],
    *,
    actor: str,
    dry_run: bool,
) -> AppliedChanges:
    """Apply recommended changes in one transaction, log each with its before figures, and issue
    one ``cache.policy.reload``; with ``dry_run`` (the recommend mode) touch nothing at all.

    Each change is checked again (InputError naming the field): what is stored never exceeds its
    staleness budget, whoever built the change.
    """
    _check_actor(actor)
    for change in changes:
        check_policy(change.after)
    if dry_run or not changes:
        return AppliedChanges(dry_run=dry_run, changes=tuple(changes))
    now = _now()
    ids: list[int] = []
    with db.transaction() as session:
        for change in changes:
            existing = session.get(CacheTtlPolicy, change.tool, with_for_update=True)
            before = None if existing is None else to_policy(existing)
            stored = write_rule(session, replace(change.after, tool=change.tool), actor, now)
            ids.append(
                _log(
                    session,
                    tool=change.tool,
                    before=before,
                    after=stored,
                    figures=change.figures_before,
                    actor=actor,
                    now=now,
                    reason=change.reason or "applied",
                    guarded=True,
                )
            )
    command_id = notify_replicas(db, settings, actor=actor)
    return AppliedChanges(
        dry_run=False, changes=tuple(changes), change_ids=tuple(ids), command_id=command_id
    )
