from __future__ import annotations

from pathlib import Path

from m1lib.db import migrate
from tasks.database import apply_migrations, describe_tables, read_schema_revision


def test_read_revision_of_a_new_database_is_none(task_settings: Path) -> None:
    revision = read_schema_revision.fn()
    assert revision == {"current": None, "head": migrate.head_revision()}


def test_apply_migrations_then_describe_tables(task_settings: Path) -> None:
    assert apply_migrations.fn("head") == migrate.head_revision()
    tables = {row["table"]: row["rows"] for row in describe_tables.fn()}
    assert tables["replicas"] == 0
    assert {"control_commands", "control_acks", "api_credentials"} <= set(tables)
    assert (task_settings / "m1.db").exists()
