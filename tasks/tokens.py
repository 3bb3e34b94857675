"""Token tasks: the purge's steps over ``m1lib.revocation``, retried only when the database is down.

A purge needs no live state, so each task builds a manager without its threads (no first load,
no subscriber), does one transaction and closes it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prefect import task

from m1lib.revocation import PurgeSummary, RevocationManager
from m1lib.settings import get_settings
from tasks.retry import is_transient


def _manager() -> RevocationManager:
    return RevocationManager.from_settings(get_settings())


@task(name="compute-purge-cutoff")
def purge_cutoff(older_than_hours: float, now: datetime | None = None) -> datetime:
    """The cut-off: records whose token expired before it may go."""
    return (now or datetime.now(UTC)) - timedelta(hours=older_than_hours)


@task(
    name="preview-token-purge",
    retries=3,
    retry_delay_seconds=[2, 5, 10],
    retry_condition_fn=is_transient,
)
def preview_purge(older_than: datetime) -> PurgeSummary:
    """Count, per tool, the records and rules a purge at ``older_than`` would delete."""
    manager = _manager()
    try:
        return manager.purge(older_than, dry_run=True)
    finally:
        manager.close()


@task(
    name="purge-expired-tokens",
    retries=3,
    retry_delay_seconds=[2, 5, 10],
    retry_condition_fn=is_transient,
)
def purge_expired(older_than: datetime, actor: str) -> PurgeSummary:
    """Delete them, audited under ``actor``; a retry after a lost commit finds less to delete."""
    manager = _manager()
    try:
        return manager.purge(older_than, actor=actor)
    finally:
        manager.close()
