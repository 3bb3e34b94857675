"""Housekeeping tasks: the cut-offs, the preview and the pruning over ``m1lib.ops.housekeeping``.

The I/O tasks retry only on a database outage (``tasks.retry``); each pruning batch commits on its
own, so a retry after a failure finds less to delete.
"""

from __future__ import annotations

from datetime import UTC, datetime

from prefect import task

from m1lib.ops import housekeeping
from m1lib.ops.housekeeping import Cutoffs, HousekeepingSummary
from m1lib.settings import get_settings
from tasks.resources import database
from tasks.retry import io_task


@task(name="compute-housekeeping-cutoffs")
def housekeeping_cutoffs(now: datetime | None = None) -> Cutoffs:
    """The run's cut-offs from M1_HOUSEKEEPING_* at ``now``, once for preview and pruning."""
    return housekeeping.cutoffs(get_settings(), now or datetime.now(UTC))


@io_task("preview-housekeeping")
def preview_housekeeping(cutoffs: Cutoffs) -> HousekeepingSummary:
    """Count, per table, the rows a pruning at these cut-offs would delete."""
    with database() as db:
        return housekeeping.count(db, cutoffs)


@io_task("prune-housekeeping")
def prune_housekeeping(cutoffs: Cutoffs, batch_size: int) -> HousekeepingSummary:
    """Delete them, ``batch_size`` rows per transaction."""
    with database() as db:
        return housekeeping.prune(db, cutoffs, batch_size=batch_size)
