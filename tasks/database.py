"""Database tasks: thin wrappers over ``m1lib.db``, retried on an outage (see ``tasks.retry``)."""

from __future__ import annotations

from typing import TypedDict

from sqlalchemy import func, select, table

from m1lib.db import migrate
from tasks.resources import database
from tasks.retry import io_task


class SchemaRevision(TypedDict):
    current: str | None
    head: str


class TableSize(TypedDict):
    table: str
    rows: int


@io_task("read-schema-revision")
def read_schema_revision() -> SchemaRevision:
    with database() as db:
        return {"current": migrate.current_revision(db), "head": migrate.head_revision()}


@io_task("apply-migrations")
def apply_migrations(target_revision: str) -> str | None:
    with database() as db:
        return migrate.upgrade(db, target_revision)


@io_task("describe-tables")
def describe_tables() -> list[TableSize]:
    """Rows per table of M1's schema (Alembic's own table left out)."""
    with database() as db:
        names = migrate.table_names(db)
        with db.connect() as connection:
            counts = [
                connection.execute(select(func.count()).select_from(table(name))).scalar_one()
                for name in names
            ]
    return [{"table": name, "rows": int(count)} for name, count in zip(names, counts, strict=True)]
