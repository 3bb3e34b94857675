"""Metrics tasks: retention and compaction of persisted chunks, and the command replicas apply.

Database work retries on a database outage (``is_transient``), never on bad input; building the
storage table is pure and does not retry.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from prefect import task

from m1lib.control import issue_command
from m1lib.db.session import Database
from m1lib.metrics import persist
from m1lib.settings import get_settings
from tasks.retry import is_transient

RETRY = {"retries": 3, "retry_delay_seconds": [2, 5, 10], "retry_condition_fn": is_transient}
RESOLUTIONS = ("raw", "1m", "1h")


def _database() -> Database:
    return Database(get_settings())


@task(name="read-chunk-stats", **RETRY)
def read_chunk_stats() -> list[dict[str, Any]]:
    """Persisted chunks, points and bytes per metric and resolution."""
    db = _database()
    try:
        return [stats.to_dict() for stats in persist.chunk_stats(db)]
    finally:
        db.dispose()


@task(name="apply-chunk-retention", **RETRY)
def apply_chunk_retention(dry_run: bool) -> dict[str, dict[str, int]]:
    """Delete (or, dry, count) what is past M1_RAW_RETENTION and M1_ROLLUP_RETENTION_*."""
    db = _database()
    try:
        return persist.apply_retention(db, get_settings(), dry_run=dry_run)
    finally:
        db.dispose()


@task(name="compact-persisted-chunks", **RETRY)
def compact_persisted_chunks(
    older_than_minutes: int, max_windows: int, dry_run: bool
) -> dict[str, dict[str, int]]:
    """Merge each closed window's chunks into one per metric, resolution and replica."""
    db = _database()
    try:
        return persist.compact_chunks(
            db,
            older_than=timedelta(minutes=older_than_minutes),
            max_windows=max_windows,
            dry_run=dry_run,
        )
    finally:
        db.dispose()


@task(name="request-replica-compaction", **RETRY)
def request_replica_compaction() -> int:
    """Issue ``metrics.compact`` so every live replica compacts its memory; returns its id."""
    settings = get_settings()
    db = Database(settings)
    try:
        return issue_command(
            db, "metrics.compact", {}, created_by="compact-timeseries", settings=settings
        )
    finally:
        db.dispose()


@task(name="storage-table")
def storage_table(stats: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per resolution: chunks, points, bytes and bytes per point, over every metric."""
    rows = []
    for resolution in RESOLUTIONS:
        chosen = [s for s in stats if s["resolution"] == resolution]
        points = sum(int(s["points"]) for s in chosen)
        size = sum(int(s["bytes"]) for s in chosen)
        rows.append({
            "resolution": resolution,
            "metrics": len(chosen),
            "chunks": sum(int(s["chunks"]) for s in chosen),
            "points": points,
            "bytes": size,
            "bytes_per_point": round(size / points, 2) if points else 0.0,
        })  # fmt: skip
    return rows
