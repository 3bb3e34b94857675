"""Tasks get their database (and settings) from the flow run's environment, held for one task."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import text

from m1lib.db import migrate
from m1lib.db.session import Database
from m1lib.errors import DatabaseUnavailable
from m1lib.settings import get_settings
from tasks.resources import database, revocation_manager


def _pooled(db: Database) -> int:
    """Connections the engine's pool holds: 0 once the engine is disposed."""
    return db.engine.pool.checkedin()  # type: ignore[attr-defined,no-any-return]


def test_database_follows_the_environment_and_is_disposed_at_exit(task_settings: Path) -> None:
    with database() as db:
        assert db.settings is get_settings()
        assert str(task_settings) in str(db.engine.url)
        with db.connect() as connection:
            connection.execute(text("SELECT 1"))
        assert _pooled(db) == 1
    assert _pooled(db) == 0


def test_database_is_disposed_when_the_task_fails(task_settings: Path) -> None:
    held: list[Database] = []

    def failing_task() -> None:
        with database() as db:
            held.append(db)
            with db.connect() as connection:
                connection.execute(text("SELECT 1"))
            raise RuntimeError("task failed")

    with pytest.raises(RuntimeError, match="task failed"):
        failing_task()
    assert _pooled(held[0]) == 0


def test_revocation_manager_works_on_that_database_and_releases_it(task_settings: Path) -> None:
    with Database(get_settings()) as db:
        migrate.upgrade(db)
    with revocation_manager() as manager:
        assert manager.db.settings is get_settings()
        summary = manager.purge(datetime.now(UTC), dry_run=True)
        assert (summary.dry_run, summary.tokens, summary.rules) == (True, 0, 0)
    assert _pooled(manager.db) == 0


def test_an_unreachable_database_is_an_outage(
    task_settings: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("M1_DATABASE_URL", "postgresql://m1@127.0.0.1:1/m1")
    monkeypatch.setenv("M1_DATABASE_CONNECT_TIMEOUT_S", "1")
    get_settings.cache_clear()
    with pytest.raises(DatabaseUnavailable), database() as db, db.connect():
        pass
