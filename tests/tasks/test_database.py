from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, exc

from m1lib.db import migrate
from m1lib.errors import DatabaseUnavailable
from m1lib.settings import get_settings
from tasks.database import apply_migrations, describe_tables, read_schema_revision
from tasks.retry import is_transient


def test_read_revision_of_a_new_database_is_none(task_settings: Path) -> None:
    revision = read_schema_revision.fn()
    assert revision == {"current": None, "head": migrate.head_revision()}


def test_apply_migrations_then_describe_tables(task_settings: Path) -> None:
    assert apply_migrations.fn("head") == migrate.head_revision()
    tables = {row["table"]: row["rows"] for row in describe_tables.fn()}
    assert tables["replicas"] == 0
    assert {"control_commands", "control_acks", "api_credentials"} <= set(tables)
    assert (task_settings / "m1.db").exists()


@pytest.mark.parametrize("io_task", [read_schema_revision, apply_migrations, describe_tables])
def test_an_outage_is_a_database_unavailable_that_the_policy_retries(
    task_settings: Path, monkeypatch: pytest.MonkeyPatch, io_task: Any
) -> None:
    """Every step, table counts included, goes through Database's error wrapping."""
    monkeypatch.setenv("M1_DATABASE_URL", "postgresql://m1@127.0.0.1:1/m1")
    monkeypatch.setenv("M1_DATABASE_CONNECT_TIMEOUT_S", "1")
    get_settings.cache_clear()
    args = ("head",) if io_task is apply_migrations else ()
    with pytest.raises(DatabaseUnavailable):
        io_task.fn(*args)
    assert io_task.retry_condition_fn is is_transient


def test_describe_tables_counts_through_the_wrapped_connection(
    task_settings: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure after connecting (reading names, counting rows) is an outage too."""
    apply_migrations.fn("head")

    def broken(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise exc.OperationalError("SELECT count(*)", {}, Exception("server closed the connection"))

    monkeypatch.setattr(Connection, "execute", broken)
    with pytest.raises(DatabaseUnavailable, match="unavailable"):
        describe_tables.fn()
