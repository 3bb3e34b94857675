"""Database tasks: thin wrappers over ``m1lib.db`` with retries where a retry helps."""

from __future__ import annotations

from typing import Any

from prefect import task
from sqlalchemy import func, select, table

from m1lib.db import migrate
from m1lib.db.session import Database
from m1lib.settings import get_settings
from tasks.retry import is_transient

RETRY = {"retries": 3, "retry_delay_seconds": [2, 5, 10], "retry_condition_fn": is_transient}


def _database() -> Database:
    return Database(get_settings())


@task(name="read-schema-revision", **RETRY)
def read_schema_revision() -> dict[str, str | None]:
    db = _database()
    try:
        return {"current": migrate.current_revision(db), "head": migrate.head_revision()}
    finally:
        db.dispose()


@task(name="apply-migrations", **RETRY)
def apply_migrations(target_revision: str) -> str | None:
    db = _database()
    try:
        return migrate.upgrade(db, target_revision)
    finally:
        db.dispose()


@task(name="describe-tables", **RETRY)
def describe_tables() -> list[dict[str, Any]]:
    db = _database()
    try:
        rows = []
        with db.engine.connect() as connection:
            for name in migrate.table_names(db):
                count = connection.execute(
                    select(func.count()).select_from(table(name))
                ).scalar_one()
                rows.append({"table": name, "rows": int(count)})
        return rows
    finally:
        db.dispose()
