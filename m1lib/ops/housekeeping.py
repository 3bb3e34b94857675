"""Housekeeping: prune what M1's own tables no longer need, counted first, deleted in batches.

What goes (each :class:`Prunable` below; the cut-offs are :class:`Cutoffs`):

- ``control_commands`` that expired (no replica applies them any more), their ``control_acks`` first;
- ``replicas`` rows whose heartbeat is older than ``M1_HOUSEKEEPING_REPLICA_GONE_AFTER``, never the
  row of the replica this process would be (``Settings.replica_id``);
- ``incidents`` resolved before ``M1_HOUSEKEEPING_INCIDENT_RETENTION`` (open ones never), and
  ``health_streaks`` rows not updated within ``M1_HOUSEKEEPING_STREAK_RETENTION``;
- ``cache_ttl_observations`` not republished within ``M1_HOUSEKEEPING_TTL_OBSERVATION_RETENTION``
  (their process is gone: a live one upserts its rows every ``M1_COST_TTL_PUBLISH_S``).

Each batch is one transaction: children, then the parents chosen by primary key, the condition
checked again in the DELETE so a row that changed meanwhile (a replica's heartbeat) stays. A
retry after a lost commit finds less to delete. Plain Core statements over the models' tables:
SQLite and PostgreSQL alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import ColumnElement, Table, and_, delete, func, select

from m1lib.db.models import Base
from m1lib.errors import InputError
from m1lib.settings import Settings

if TYPE_CHECKING:
    from m1lib.db.session import Database

__all__ = [
    "COMMANDS",
    "INCIDENTS",
    "OBSERVATIONS",
    "REPLICAS",
    "STREAKS",
    "TARGETS",
    "Child",
    "Cutoffs",
    "HousekeepingSummary",
    "Prunable",
    "TableResult",
    "count",
    "cutoffs",
    "prune",
]

BATCH_MAX: Final = 5000  # ids bound in one IN (...): far below SQLite's 32766 variables


@dataclass(frozen=True)
class Child:
    """A table whose rows refer to a prunable row and go first, in the same transaction."""

    table: str
    column: str  # the column holding the parent's key


@dataclass(frozen=True)
class Prunable:
    """One table housekeeping prunes: rows whose ``time_column`` is before the cut-off."""

    table: str
    key: str  # the single-column primary key batches are chosen by
    time_column: str  # rows with a value before the cut-off go; NULL never does
    setting: str  # what sets the cut-off, as the report names it
    children: tuple[Child, ...] = ()


COMMANDS: Final = Prunable(
    "control_commands",
    key="id",
    time_column="expires_at",
    setting="expired (M1_CONTROL_COMMAND_TTL_S or the command's ttl_s)",
    children=(Child("control_acks", "command_id"),),
)
REPLICAS: Final = Prunable(
    "replicas",
    key="id",
    time_column="last_seen",
    setting="M1_HOUSEKEEPING_REPLICA_GONE_AFTER",
)
INCIDENTS: Final = Prunable(
    "incidents",
    key="id",
    time_column="resolved_at",  # NULL while open: an open incident is never pruned
    setting="M1_HOUSEKEEPING_INCIDENT_RETENTION",
)
STREAKS: Final = Prunable(
    "health_streaks",
    key="component",
    time_column="updated_at",
    setting="M1_HOUSEKEEPING_STREAK_RETENTION",
)
OBSERVATIONS: Final = Prunable(
    "cache_ttl_observations",
    key="id",
    time_column="updated_at",
    setting="M1_HOUSEKEEPING_TTL_OBSERVATION_RETENTION",
)
TARGETS: Final = (COMMANDS, REPLICAS, INCIDENTS, STREAKS, OBSERVATIONS)


@dataclass(frozen=True)
class Cutoffs:
    """One run's cut-offs, computed once so the preview and the deletion agree."""

    now: datetime
    commands_expired_before: datetime
    replicas_seen_before: datetime
    incidents_resolved_before: datetime
    streaks_updated_before: datetime
    observations_updated_before: datetime
    current_replica: str  # never pruned, however old its row

    def of(self, target: Prunable) -> datetime:
        """The cut-off of ``target`` (one of :data:`TARGETS`)."""
        return {
            COMMANDS.table: self.commands_expired_before,
            REPLICAS.table: self.replicas_seen_before,
            INCIDENTS.table: self.incidents_resolved_before,
            STREAKS.table: self.streaks_updated_before,
            OBSERVATIONS.table: self.observations_updated_before,
        }[target.table]


def cutoffs(settings: Settings, now: datetime) -> Cutoffs:
    """The cut-offs at ``now`` (aware) for ``settings.housekeeping``."""
    if not isinstance(now, datetime) or now.utcoffset() is None:
        raise InputError("now", f"{now!r} has no time zone", ["an aware datetime (UTC)"])
    keep = settings.housekeeping
    return Cutoffs(
        now=now,
        commands_expired_before=now,
        replicas_seen_before=now - keep.replica_gone_after,
        incidents_resolved_before=now - keep.incident_retention,
        streaks_updated_before=now - keep.streak_retention,
        observations_updated_before=now - keep.ttl_observation_retention,
        current_replica=settings.replica_id,
    )


@dataclass(frozen=True)
class TableResult:
    """Rows of one table that were (or, dry, would be) pruned."""

    table: str
    rows: int
    before: datetime  # the cut-off
    setting: str
    parent: str | None = None  # a child table: its rows went with this table's

    def to_row(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "rows": self.rows,
            "before": self.before.isoformat(timespec="seconds"),
            "rule": f"with its {self.parent}" if self.parent else self.setting,
        }


@dataclass(frozen=True)
class HousekeepingSummary:
    """What one housekeeping pass pruned (or, dry, would prune), table by table."""

    dry_run: bool
    now: datetime
    tables: tuple[TableResult, ...] = field(default_factory=tuple)

    def rows_of(self, name: str) -> int:
        return sum(item.rows for item in self.tables if item.table == name)

    @property
    def total(self) -> int:
        return sum(item.rows for item in self.tables)

    def rows(self) -> list[dict[str, Any]]:
        return [item.to_row() for item in self.tables]


# -- the SQL ----------------------------------------------------------------------------------


def _table(name: str) -> Table:
    """The model's table (m1lib.db.models): its columns carry their types (UtcDateTime)."""
    return Base.metadata.tables[name]


def _condition(parent: Table, target: Prunable, cut: Cutoffs) -> ColumnElement[bool]:
    condition = parent.c[target.time_column] < cut.of(target)
    if target is REPLICAS:
        condition = and_(condition, parent.c[target.key] != cut.current_replica)
    return condition


def _result(
    target: Prunable, cut: Cutoffs, rows: int, *, child: Child | None = None
) -> TableResult:
    if child is None:
        return TableResult(target.table, rows, cut.of(target), target.setting)
    return TableResult(child.table, rows, cut.of(target), target.setting, parent=target.table)


def count(db: Database, cut: Cutoffs) -> HousekeepingSummary:
    """Count what :func:`prune` would delete now; changes nothing."""
    results: list[TableResult] = []
    with db.connect() as connection:
        for target in TARGETS:
            parent = _table(target.table)
            chosen = select(parent.c[target.key]).where(_condition(parent, target, cut))
            rows = connection.execute(select(func.count()).select_from(chosen.subquery()))
            results.append(_result(target, cut, int(rows.scalar_one())))
            for child in target.children:
                clause = _table(child.table)
                counted = connection.execute(
                    select(func.count())
                    .select_from(clause)
                    .where(clause.c[child.column].in_(chosen))
                )
                results.append(_result(target, cut, int(counted.scalar_one()), child=child))
    return HousekeepingSummary(dry_run=True, now=cut.now, tables=tuple(results))


def prune(db: Database, cut: Cutoffs, *, batch_size: int = 500) -> HousekeepingSummary:
    """Delete, ``batch_size`` parent rows per transaction, what :func:`count` counts."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int):
        raise InputError("batch_size", f"{batch_size!r} is not an integer", [f"1-{BATCH_MAX}"])
    if not 1 <= batch_size <= BATCH_MAX:
        raise InputError("batch_size", f"{batch_size} is out of range", [f"1-{BATCH_MAX}"])
    results: list[TableResult] = []
    for target in TARGETS:
        deleted, by_child = _prune_target(db, target, cut, batch_size)
        results.append(_result(target, cut, deleted))
        results += [
            _result(target, cut, by_child[child.table], child=child) for child in target.children
        ]
    return HousekeepingSummary(dry_run=False, now=cut.now, tables=tuple(results))


def _prune_target(
    db: Database, target: Prunable, cut: Cutoffs, batch_size: int
) -> tuple[int, dict[str, int]]:
    parent = _table(target.table)
    key = parent.c[target.key]
    condition = _condition(parent, target, cut)
    deleted = 0
    by_child = {child.table: 0 for child in target.children}
    while True:
        with db.begin() as connection:
            chosen = select(key).where(condition).order_by(key).limit(batch_size)
            ids: Sequence[Any] = connection.execute(chosen).scalars().all()
            if not ids:
                break
            for child in target.children:
                clause = _table(child.table)
                gone = connection.execute(delete(clause).where(clause.c[child.column].in_(ids)))
                by_child[child.table] += max(gone.rowcount, 0)
            gone = connection.execute(delete(parent).where(key.in_(ids), condition))
            deleted += max(gone.rowcount, 0)
        if len(ids) < batch_size:
            break
    return deleted, by_child
