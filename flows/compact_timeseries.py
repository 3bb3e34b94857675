"""Compact timeseries: retention and compaction of persisted event chunks, then of every replica."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prefect import flow
from pydantic import BaseModel, Field

from flows.credentials import api_key_from_block
from flows.shape import FlowReport, apply_unless_dry_run, publish
from tasks.metrics import (
    apply_chunk_retention,
    compact_persisted_chunks,
    read_chunk_stats,
    request_replica_compaction,
)

ARTIFACT_KEY = "timeseries-storage"
RESOLUTIONS = ("raw", "1m", "1h")


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


@dataclass(frozen=True)
class Compaction:
    """What retention and compaction did (or, dry, would do), and the storage after them."""

    retention: dict[str, dict[str, int]]
    compaction: dict[str, dict[str, int]]
    stats: list[dict[str, Any]]  # per metric and resolution, after (dry: as before)
    command_id: int | None = None


@flow(name="compact-timeseries", log_prints=True)
def compact_timeseries(params: CompactTimeseriesParams | None = None) -> dict[str, Any]:
    """Apply the retention of raw events and rollups to ``metric_chunks``, merge closed chunks,
    and ask every replica to compact its in-memory store.

    Scheduled hourly; run it by hand after lowering M1_RAW_RETENTION or M1_ROLLUP_RETENTION_* to
    free space at once. With dry_run it changes nothing and reports what it would do.
    """
    api_key_from_block()  # before anything records: events then reach the replicas
    params = params or CompactTimeseriesParams()
    before = read_chunk_stats()
    done = apply_unless_dry_run(
        params.dry_run, apply=lambda: _apply(params), rehearse=lambda: _rehearse(params, before)
    )
    return publish(compaction_report(params.dry_run, done))


def _apply(params: CompactTimeseriesParams) -> Compaction:
    retention = apply_chunk_retention(False)
    compaction = compact_persisted_chunks(
        params.compact_older_than_minutes, params.max_windows, False
    )
    stats = read_chunk_stats()
    command_id = request_replica_compaction() if params.notify_replicas else None
    return Compaction(retention, compaction, stats, command_id)


def _rehearse(params: CompactTimeseriesParams, before: list[dict[str, Any]]) -> Compaction:
    """The same steps in their dry-run mode: only walking the chunks says what they would do."""
    retention = apply_chunk_retention(True)
    compaction = compact_persisted_chunks(
        params.compact_older_than_minutes, params.max_windows, True
    )
    return Compaction(retention, compaction, before)


def compaction_report(dry_run: bool, done: Compaction) -> FlowReport:
    """Points dropped, windows merged, and the storage per resolution after them."""
    table = storage_table(done.stats)
    dropped = sum(item["points_dropped"] for item in done.retention.values())
    merged = sum(item["windows"] for item in done.compaction.values())
    verb = "would drop" if dry_run else "dropped"
    command_id = done.command_id
    return FlowReport(
        artifact_key=ARTIFACT_KEY,
        table=table,
        description=(
            f"Persisted event chunks per resolution{' (dry run: unchanged)' if dry_run else ''}: "
            f"retention {verb} {dropped} points, compaction merged {merged} windows"
            + (f", replicas asked to compact (command {command_id})." if command_id else ".")
        ),
        log=f"retention {verb} {dropped} points; {merged} windows merged; command {command_id}",
        result={
            "dry_run": dry_run,
            "retention": done.retention,
            "compaction": done.compaction,
            "command_id": command_id,
            "storage": table,
        },
    )


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
