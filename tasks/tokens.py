"""Token tasks: the purge's steps over ``m1lib.revocation``, retried only when the database is down."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prefect import task

from m1lib.revocation import PurgeSummary
from tasks.resources import revocation_manager
from tasks.retry import io_task


@task(name="compute-purge-cutoff")
def purge_cutoff(older_than_hours: float, now: datetime | None = None) -> datetime:
    """The cut-off: records whose token expired before it may go."""
    return (now or datetime.now(UTC)) - timedelta(hours=older_than_hours)


@io_task("preview-token-purge")
def preview_purge(older_than: datetime) -> PurgeSummary:
    """Count, per tool, the records and rules a purge at ``older_than`` would delete."""
    with revocation_manager() as manager:
        return manager.purge(older_than, dry_run=True)


@io_task("purge-expired-tokens")
def purge_expired(older_than: datetime, actor: str) -> PurgeSummary:
    """Delete them, audited under ``actor``; a retry after a lost commit finds less to delete."""
    with revocation_manager() as manager:
        return manager.purge(older_than, actor=actor)
