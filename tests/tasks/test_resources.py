"""Tasks get their database (and settings) from the flow run's environment, held for one task."""

from __future__ import annotations

from pathlib import Path

import pytest

from m1lib.db.session import Database
from m1lib.errors import DatabaseUnavailable
from m1lib.revocation import RevocationManager
from m1lib.settings import get_settings
from tasks.resources import database, revocation_manager


def _disposals(monkeypatch: pytest.MonkeyPatch) -> list[Database]:
    disposed: list[Database] = []
    original = Database.dispose

    def dispose(self: Database) -> None:
        disposed.append(self)
        original(self)

    monkeypatch.setattr(Database, "dispose", dispose)
    return disposed


def test_database_follows_the_environment_and_is_disposed_at_exit(
    task_settings: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    disposed = _disposals(monkeypatch)
    with database() as db:
        assert db.settings is get_settings()
        assert str(task_settings) in str(db.engine.url)
        assert disposed == []
    assert disposed == [db]


def test_database_is_disposed_when_the_task_fails(
    task_settings: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    disposed = _disposals(monkeypatch)
    with pytest.raises(RuntimeError), database() as db:
        raise RuntimeError("task failed")
    assert disposed == [db]


def test_revocation_manager_is_closed_with_its_database(
    task_settings: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    disposed = _disposals(monkeypatch)
    closed: list[RevocationManager] = []
    original = RevocationManager.close
    monkeypatch.setattr(
        RevocationManager, "close", lambda self: (closed.append(self), original(self))[1]
    )
    with revocation_manager() as manager:
        assert manager.db.settings is get_settings()
    assert closed == [manager]
    assert disposed == [manager.db]


def test_an_unreachable_database_is_an_outage(
    task_settings: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("M1_DATABASE_URL", "postgresql://m1@127.0.0.1:1/m1")
    monkeypatch.setenv("M1_DATABASE_CONNECT_TIMEOUT_S", "1")
    get_settings.cache_clear()
    with pytest.raises(DatabaseUnavailable), database() as db, db.connect():
        pass
