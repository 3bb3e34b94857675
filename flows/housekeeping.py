"""Housekeeping: prune expired control commands, gone replicas, old incidents and streak rows."""

from __future__ import annotations

from typing import Any

from prefect import flow
from pydantic import BaseModel, Field

from flows.shape import FlowReport, apply_unless_dry_run, publish
from m1lib.ops.housekeeping import BATCH_MAX, HousekeepingSummary
from tasks.housekeeping import housekeeping_cutoffs, preview_housekeeping, prune_housekeeping

ARTIFACT_KEY = "housekeeping"


class HousekeepingParams(BaseModel):
    dry_run: bool = Field(False, description="Only count what would be pruned; delete nothing.")
    batch_size: int = Field(
        500,
        ge=1,
        le=BATCH_MAX,
        description="Rows deleted per transaction: smaller holds locks for less time.",
    )


@flow(name="housekeeping", log_prints=True)
def housekeeping(params: HousekeepingParams | None = None) -> dict[str, Any]:
    """Delete what M1's own tables no longer need: expired control commands with their acks,
    replicas rows gone past M1_HOUSEKEEPING_REPLICA_GONE_AFTER, incidents resolved before
    M1_HOUSEKEEPING_INCIDENT_RETENTION and health streaks idle past M1_HOUSEKEEPING_STREAK_RETENTION.

    Scheduled daily from prefect.yaml; run it by hand with `dry_run` to see what would go. Live
    commands, open incidents and the replica this configuration names are never touched.
    """
    params = params or HousekeepingParams()
    cutoffs = housekeeping_cutoffs()
    preview = preview_housekeeping(cutoffs)
    counts = ", ".join(f"{item.table} {item.rows}" for item in preview.tables)
    print(f"{preview.total} rows to prune: {counts}")
    summary = apply_unless_dry_run(
        params.dry_run,
        apply=lambda: prune_housekeeping(cutoffs, params.batch_size),
        rehearse=lambda: preview,
    )
    return publish(housekeeping_report(summary))


def housekeeping_report(summary: HousekeepingSummary) -> FlowReport:
    """Rows pruned (or, dry, that would be) per table, with the cut-off and the rule behind it."""
    verb = "Would prune" if summary.dry_run else "Pruned"
    headline = (
        f"{verb} **{summary.total}** rows of M1's tables at "
        f"{summary.now.isoformat(timespec='seconds')}"
    )
    description = headline + (" (dry run: nothing deleted)." if summary.dry_run else ".")
    rows = summary.rows()
    return FlowReport(
        artifact_key=ARTIFACT_KEY,
        table=rows,
        description=description,
        log=headline.replace("**", ""),
        result={
            "now": summary.now.isoformat(),
            "dry_run": summary.dry_run,
            "total": summary.total,
            "tables": {item.table: item.rows for item in summary.tables},
            "rows": rows,
            "description": description,
        },
    )
