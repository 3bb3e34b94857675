"""Runtimes for tests: built from settings of the test's own, always closed."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from m1lib.db import migrate
from m1lib.db.session import Database
from m1lib.metrics import MetricsRuntime
from m1lib.redis_conn import make_redis
from m1lib.settings import Settings

MakeRuntime = Callable[..., MetricsRuntime]


@pytest.fixture
def make_runtime() -> Iterator[MakeRuntime]:
    """``make_runtime(settings, replica_id=..., db=..., redis=True, start=True)``; closed after."""
    built: list[MetricsRuntime] = []
    clients: list[Any] = []

    def factory(settings: Settings, *, replica_id: str, db: Database | None = None, redis: bool = False,
                start: bool = True, **kwargs: Any) -> MetricsRuntime:  # fmt: skip
        client = make_redis(settings) if redis else None
        if client is not None:
            clients.append(client)
        runtime = MetricsRuntime(
            settings, db=db, redis_client=client, replica_id=replica_id, **kwargs
        )
        built.append(runtime)
        if start:
            runtime.start()
        return runtime

    yield factory
    for runtime in built:
        runtime.close()
    for client in clients:
        client.close()


@pytest.fixture
def pg_database(fresh_pg_url: str, make_settings: Callable[..., Settings]) -> Iterator[Database]:
    """An empty, migrated PostgreSQL database of the test's own."""
    db = Database(make_settings(database={"url": fresh_pg_url}))
    migrate.upgrade(db)
    yield db
    db.dispose()
