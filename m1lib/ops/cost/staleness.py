"""The measured stale rate: per-tool hit counters each process publishes, and a window's rate.

Why counters and not events: whether a hit was stale is known only later, when the key is
refetched, and only in the process that remembers the fingerprint it filled (a
:class:`~m1lib.ops.cost.observe.CacheFeed`). So each feed counts, per tool, the hits it served and
the ``suspect_hits``: hits served since a key's last fill that a refetch then found changed. The
value changed at some moment between the fill and the refetch, so only the hits after that moment
were really stale: ``suspect_hits`` is an UPPER BOUND of stale responses (a refetch that finds the
value unchanged clears the key's hits as fresh). Hits on keys this process never filled (an entry
another replica put in a shared Redis) are counted as hits but can never become suspect.

Publishing: every publish appends one :class:`Counters` row per tool (``cache_ttl_counters``),
cumulative since the process started (``process``, ``started_at``). :func:`stale_rates` takes the
difference between the row nearest a window's start and the latest row, per process, summed over
processes; a counter that went down, or a new ``started_at``, is a restart: the counts since it
are added whole.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import groupby
from typing import TYPE_CHECKING, Final

from sqlalchemy import delete, select

from m1lib.db.models import CacheTtlCounter

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from m1lib.db.session import Database

_LOOKBACK: Final = timedelta(hours=6)  # how far before a window a baseline row is looked for
_PRUNE_MAX: Final = 5000  # old rows one publish deletes (bound parameters, transaction size)

__all__ = ["Counters", "load_counters", "load_stale_rates", "stale_rates", "write_counters"]


@dataclass(frozen=True)
class Counters:
    """One process's cumulative counts for one tool at ``at`` (a ``cache_ttl_counters`` row)."""

    process: str
    started_at: datetime
    tool: str
    at: datetime
    hits: int = 0
    suspect_hits: int = 0  # hits from an entry a later refetch found changed (upper bound of stale)
    refetches: int = 0  # fills of a key this process had filled before
    changed: int = 0  # those that found the value changed

    def _restarted_after(self, previous: Counters) -> bool:
        return (
            self.started_at != previous.started_at
            or self.hits < previous.hits
            or self.suspect_hits < previous.suspect_hits
        )


def write_counters(
    session: Session, counters: Sequence[Counters], *, prune_before: datetime
) -> None:
    """Append ``counters`` and delete rows older than ``prune_before`` (any process: a gone
    process's rows go too; at most ``_PRUNE_MAX`` a call), in the caller's transaction. Rows
    another publisher is deleting are skipped (PostgreSQL ``SKIP LOCKED``), so concurrent
    publishers never wait on or deadlock with each other."""
    old = session.scalars(
        select(CacheTtlCounter.id)
        .where(CacheTtlCounter.at < prune_before)
        .limit(_PRUNE_MAX)
        .with_for_update(skip_locked=True)
    ).all()
    if old:
        session.execute(delete(CacheTtlCounter).where(CacheTtlCounter.id.in_(old)))
    session.add_all(
        CacheTtlCounter(
            process=c.process,
            started_at=c.started_at,
            tool=c.tool,
            at=c.at,
            hits=c.hits,
            suspect_hits=c.suspect_hits,
            refetches=c.refetches,
            changed=c.changed,
        )
        for c in counters
    )


def load_counters(db: Database, start: datetime, end: datetime) -> list[Counters]:
    """The rows a window ``[start, end]`` needs: those inside it and, per (process, tool), the
    latest before it (the baseline)."""
    with db.transaction() as session:
        rows = session.scalars(
            select(CacheTtlCounter)
            .where(CacheTtlCounter.at <= end, CacheTtlCounter.at >= start - _LOOKBACK)
            .order_by(CacheTtlCounter.tool, CacheTtlCounter.process, CacheTtlCounter.at)
        ).all()
        return [
            Counters(
                r.process,
                r.started_at,
                r.tool,
                r.at,
                r.hits,
                r.suspect_hits,
                r.refetches,
                r.changed,
            )
            for r in rows
        ]


def _window_counts(rows: Sequence[Counters], start: datetime, end: datetime) -> tuple[int, int]:
    """(hits, suspect hits) of one (process, tool) in ``[start, end]`` from its rows by time."""
    before = [r for r in rows if r.at <= start]
    inside = [r for r in rows if start < r.at <= end]
    if not inside:
        return 0, 0
    if before:
        previous = before[-1]
    elif inside[0].started_at >= start:  # the process began inside the window: from zero
        previous = Counters(inside[0].process, inside[0].started_at, inside[0].tool, start)
    else:  # no row before the window: count from the first one inside
        previous, inside = inside[0], inside[1:]
    hits = suspect = 0
    for row in inside:
        if row._restarted_after(previous):
            hits, suspect = hits + row.hits, suspect + row.suspect_hits
        else:
            hits += row.hits - previous.hits
            suspect += row.suspect_hits - previous.suspect_hits
        previous = row
    return hits, suspect


def stale_rates(rows: Iterable[Counters], start: datetime, end: datetime) -> dict[str, float]:
    """Per tool, suspect hits / hits in ``[start, end]`` summed over processes; pure. A tool
    without hits in the window has no rate (not 0: nothing was measured)."""
    totals: dict[str, tuple[int, int]] = {}
    ordered = sorted(rows, key=lambda r: (r.tool, r.process, r.at))
    for (tool, _process), group in groupby(ordered, key=lambda r: (r.tool, r.process)):
        hits, suspect = _window_counts(list(group), start, end)
        old_hits, old_suspect = totals.get(tool, (0, 0))
        totals[tool] = (old_hits + hits, old_suspect + suspect)
    return {
        tool: min(1.0, suspect / hits)
        for tool, (hits, suspect) in sorted(totals.items())
        if hits > 0
    }


def load_stale_rates(db: Database, start: datetime, end: datetime) -> dict[str, float]:
    """Every tool's measured stale rate over ``[start, end]`` from the published counters."""
    return stale_rates(load_counters(db, start, end), start, end)
