"""Metrics tasks: retention and compaction of persisted chunks, and the command replicas apply.

Each retries on a database outage (``tasks.retry``), never on bad input.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from m1lib.control import issue_command
from m1lib.metrics import persist
from tasks.resources import database
from tasks.retry import io_task


@io_task("read-chunk-stats")
def read_chunk_stats() -> list[dict[str, Any]]:
    """Persisted chunks, points and bytes per metric and resolution."""
    with database() as db:
        return [stats.to_dict() for stats in persist.chunk_stats(db)]


@io_task("apply-chunk-retention")
def apply_chunk_retention(dry_run: bool) -> dict[str, dict[str, int]]:
    """Delete (or, dry, count) what is past M1_RAW_RETENTION and M1_ROLLUP_RETENTION_*."""
    with database() as db:
        return persist.apply_retention(db, db.settings, dry_run=dry_run)


@io_task("compact-persisted-chunks")
def compact_persisted_chunks(
    older_than_minutes: int, max_windows: int, dry_run: bool
) -> dict[str, dict[str, int]]:
    """Merge each closed window's chunks into one per metric, resolution and replica."""
    with database() as db:
        return persist.compact_chunks(
            db,
            older_than=timedelta(minutes=older_than_minutes),
            max_windows=max_windows,
            dry_run=dry_run,
        )


@io_task("request-replica-compaction")
def request_replica_compaction() -> int:
    """Issue ``metrics.compact`` so every live replica compacts its memory; returns its id."""
    with database() as db:
        return issue_command(
            db, "metrics.compact", {}, created_by="compact-timeseries", settings=db.settings
        )
