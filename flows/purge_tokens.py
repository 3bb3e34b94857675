"""Purge tokens: delete revocation records whose token expired long ago, and rules past their use."""

from __future__ import annotations

from typing import Any

from prefect import flow
from pydantic import BaseModel, Field

from flows.credentials import api_key_from_block
from flows.shape import FlowReport, apply_unless_dry_run, publish
from m1lib.revocation import PurgeSummary
from tasks.tokens import preview_purge, purge_cutoff, purge_expired

ACTOR = "prefect:purge-tokens"
ARTIFACT_KEY = "token-purge"


class PurgeTokensParams(BaseModel):
    older_than_hours: float = Field(
        24.0,
        ge=0,
        le=24 * 365,
        description=(
            "Purge records whose token expired more than this many hours ago (0: every expired "
            "token). A record is only needed while its token could still be presented."
        ),
    )
    dry_run: bool = Field(False, description="Only count what would be purged; delete nothing.")


@flow(name="purge-tokens", log_prints=True)
def purge_tokens(params: PurgeTokensParams | None = None) -> dict[str, Any]:
    """Delete revocation records of long-expired tokens and not-before rules that can no longer match.

    Scheduled daily from prefect.yaml; run it by hand with `dry_run` to see what would go. Live
    tokens are never touched: a record goes only once its token's expiry (plus leeway) is older than
    the cut-off, so nothing that could still be presented becomes valid again.
    """
    api_key_from_block()  # before anything records: events then reach the replicas
    params = params or PurgeTokensParams()
    cutoff = purge_cutoff(params.older_than_hours)
    preview = preview_purge(cutoff)
    print(
        f"{preview.tokens} token records and {preview.rules} rules expired before "
        f"{cutoff.isoformat(timespec='seconds')}"
    )
    summary = apply_unless_dry_run(
        params.dry_run, apply=lambda: purge_expired(cutoff, ACTOR), rehearse=lambda: preview
    )
    return publish(purge_report(summary))


def purge_report(summary: PurgeSummary) -> FlowReport:
    """What was (or, dry, would be) purged, per kind and tool."""
    verb = "Would purge" if summary.dry_run else "Purged"
    headline = (
        f"{verb} **{summary.tokens}** token records and **{summary.rules}** rules that expired "
        f"before {summary.older_than.isoformat(timespec='seconds')}"
    )
    description = headline + (" (dry run: nothing deleted)." if summary.dry_run else ".")
    rows = summary.rows() or [{"kind": "none", "tool": "-", "records": 0}]
    return FlowReport(
        artifact_key=ARTIFACT_KEY,
        table=rows,
        description=description,
        log=headline.replace("**", ""),
        result={
            "older_than": summary.older_than.isoformat(),
            "dry_run": summary.dry_run,
            "tokens": summary.tokens,
            "rules": summary.rules,
            "rows": rows,
            "description": description,
        },
    )
