"""Database setup: bring M1's schema to the revision this code expects and show what is there."""

from __future__ import annotations

from typing import Any

from prefect import flow
from pydantic import BaseModel, Field

from flows.credentials import api_key_from_block
from flows.shape import FlowReport, apply_unless_dry_run, publish
from m1lib.settings import get_settings, redact_url
from tasks.database import (
    SchemaRevision,
    TableSize,
    apply_migrations,
    describe_tables,
    read_schema_revision,
)

ARTIFACT_KEY = "database-schema"


class DatabaseSetupParams(BaseModel):
    target_revision: str = Field(
        "head",
        description="Alembic revision to upgrade to; `head` is what this code expects.",
        pattern=r"^(head|[0-9a-f]{4,32})$",
    )
    dry_run: bool = Field(False, description="Only report the current and target revision.")


@flow(name="database-setup", log_prints=True)
def database_setup(params: DatabaseSetupParams | None = None) -> dict[str, Any]:
    """Apply M1's database migrations and report the schema revision and tables.

    Run it after installing a new M1 version, or after pointing M1_DATABASE_URL at a new database.
    Safe to run at any time: migrating an up-to-date database changes nothing.
    """
    api_key_from_block()  # before anything records: events then reach the replicas
    params = params or DatabaseSetupParams()
    revision = read_schema_revision()
    after = apply_unless_dry_run(
        params.dry_run,
        apply=lambda: apply_migrations(params.target_revision),
        rehearse=lambda: revision["current"],
    )
    tables = describe_tables()
    database = redact_url(get_settings().database_url)
    return publish(setup_report(params, database, revision, after, tables))


def setup_report(
    params: DatabaseSetupParams,
    database: str,
    revision: SchemaRevision,
    after: str | None,
    tables: list[TableSize],
) -> FlowReport:
    """The revision before and after, and every table's rows, on ``database`` (a redacted URL)."""
    before = revision["current"]
    if params.dry_run:
        log = f"dry run: database at {before or 'nothing'}, target {params.target_revision}"
    else:
        log = f"database migrated from {before or 'nothing'} to {after}"
    return FlowReport(
        artifact_key=ARTIFACT_KEY,
        table=[{"revision": after or "none", **row} for row in tables],
        description=(
            f"Schema revision **{after or 'none'}** (code expects {revision['head']}) on "
            f"`{database}`; {len(tables)} tables."
        ),
        log=log,
        result={
            "database": database,
            "revision_before": before,
            "revision": after,
            "head": revision["head"],
            "dry_run": params.dry_run,
            "tables": tables,
        },
    )
