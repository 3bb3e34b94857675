from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient

from m1lib.api.app import create_app
from m1lib.db import migrate
from m1lib.runtime import Runtime
from m1lib.settings import Settings


@pytest.fixture
def make_client(make_settings: Callable[..., Settings]) -> Iterator[Callable[..., TestClient]]:
    """A TestClient over a runtime of the test's own (not started: no background threads)."""
    runtimes: list[Runtime] = []
    clients: list[TestClient] = []

    def factory(*, migrated: bool = True, **overrides: object) -> TestClient:
        settings = make_settings(**overrides)
        runtime = Runtime.from_settings(settings)
        runtimes.append(runtime)
        if migrated:
            migrate.upgrade(runtime.db)
        client = TestClient(create_app(settings, runtime=runtime), raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        return client

    yield factory
    for client in clients:
        client.__exit__(None, None, None)
    for runtime in runtimes:
        runtime.close()
