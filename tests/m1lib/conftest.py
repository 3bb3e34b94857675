"""Fixtures shared by the tests of the library's process-wide calls."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from m1lib.db.migrate import upgrade
from m1lib.db.session import Database
from m1lib.metrics import MetricsRuntime, install_default
from m1lib.settings import Settings


@pytest.fixture
def metrics(make_settings: Callable[..., Settings]) -> Iterator[MetricsRuntime]:
    """This process's default metrics runtime for the test (in memory), the previous one back after."""
    runtime = MetricsRuntime(make_settings(), replica_id="t1")
    runtime.start()
    previous = install_default(runtime)
    yield runtime
    install_default(previous)
    runtime.close()


@pytest.fixture
def pg_db(make_settings: Callable[..., Settings], pg_url: str) -> Iterator[Database]:
    """The run's PostgreSQL database, migrated (shared by the run: use names of the test's own)."""
    db = Database(make_settings(database={"url": pg_url}))
    upgrade(db)
    yield db
    db.dispose()
