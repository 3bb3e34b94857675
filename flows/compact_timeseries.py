"""Compact timeseries: retention and compaction of persisted event chunks, then of every replica."""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.artifacts import create_table_artifact
from pydantic import BaseModel, Field

from tasks.metrics import (
    apply_chunk_retention,
    compact_persisted_chunks,
    read_chunk_stats,
    request_replica_compaction,
    storage_table,
)


class CompactTimeseriesParams(BaseModel):
    compact_older_than_minutes: int = Field(
        60,
        ge=5,
        le=7 * 24 * 60,
        description="Merge only windows whose newest chunk ended at least this long ago.",
    )
    max_windows: int = Field(
        500, ge=1, le=100_000, description="Most windows merged in one run (the rest wait)."
    )
    notify_replicas: bool = Field(
        True, description="Issue metrics.compact so every replica also compacts its memory."
    )
    dry_run: bool = Field(False, description="Only report what retention and compaction would do.")


@flow(name="compact-timeseries", log_prints=True)
def compact_timeseries(params: CompactTimeseriesParams | None = None) -> dict[str, Any]:
    """Apply the retention of raw events and rollups to ``metric_chunks``, merge closed chunks,
    and ask every replica to compact its in-memory store.

    Scheduled hourly; run it by hand after lowering M1_RAW_RETENTION or M1_ROLLUP_RETENTION_* to
    free space at once. With dry_run it changes nothing and reports what it would do.
    """
    params = params or CompactTimeseriesParams()
    before = read_chunk_stats()
    retention = apply_chunk_retention(params.dry_run)
    compaction = compact_persisted_chunks(
        params.compact_older_than_minutes, params.max_windows, params.dry_run
    )
    after = before if params.dry_run else read_chunk_stats()
    command_id = None
    if params.notify_replicas and not params.dry_run:
        command_id = request_replica_compaction()
    table = storage_table(after)
    dropped = sum(item["points_dropped"] for item in retention.values())
    merged = sum(item["windows"] for item in compaction.values())
    verb = "would drop" if params.dry_run else "dropped"
    print(f"retention {verb} {dropped} points; {merged} windows merged; command {command_id}")
    create_table_artifact(
        key="timeseries-storage",
        table=table,
        description=(
            f"Persisted event chunks per resolution{' (dry run: unchanged)' if params.dry_run else ''}: "
            f"retention {verb} {dropped} points, compaction merged {merged} windows"
            + (f", replicas asked to compact (command {command_id})." if command_id else ".")
        ),
    )
    return {
        "dry_run": params.dry_run,
        "retention": retention,
        "compaction": compaction,
        "command_id": command_id,
        "storage": table,
    }
