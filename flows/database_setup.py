"""Database setup: bring M1's schema to the revision this code expects and show what is there."""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.artifacts import create_table_artifact
from pydantic import BaseModel, Field

from m1lib.settings import get_settings, redact_url
from tasks.database import apply_migrations, describe_tables, read_schema_revision


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
    params = params or DatabaseSetupParams()
    revision = read_schema_revision()
    before = revision["current"]
    if params.dry_run:
        after = before
        print(f"dry run: database at {before or 'nothing'}, target {params.target_revision}")
    else:
        after = apply_migrations(params.target_revision)
        print(f"database migrated from {before or 'nothing'} to {after}")
    tables = describe_tables()
    summary = {
        "database": redact_url(get_settings().database_url),
        "revision_before": before,
        "revision": after,
        "head": revision["head"],
        "dry_run": params.dry_run,
        "tables": tables,
    }
    create_table_artifact(
        key="database-schema",
        table=[{"revision": after or "none", **row} for row in tables],
        description=(
            f"Schema revision **{after or 'none'}** (code expects {revision['head']}) on "
            f"`{summary['database']}`; {len(tables)} tables."
        ),
    )
    return summary
