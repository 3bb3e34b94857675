from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient

from m1lib import auth
from m1lib.api.app import create_app
from m1lib.api.replica import ReplicaRuntime
from m1lib.db import migrate
from m1lib.settings import Settings
from tests.fake_http import fake_http_servers


@pytest.fixture
def make_client(make_settings: Callable[..., Settings]) -> Iterator[Callable[..., TestClient]]:
    """A TestClient over a runtime of the test's own (not started: no background threads)."""
    runtimes: list[ReplicaRuntime] = []
    clients: list[TestClient] = []

    def factory(*, migrated: bool = True, **overrides: object) -> TestClient:
        settings = make_settings(**overrides)
        runtime = ReplicaRuntime.from_settings(settings)
        runtimes.append(runtime)
        if migrated:
            migrate.upgrade(runtime.db)
            runtime.revocations.load()  # what start() does on its thread, done here synchronously
        client = TestClient(create_app(settings, runtime=runtime), raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        return client

    yield factory
    for client in clients:
        client.__exit__(None, None, None)
    for runtime in runtimes:
        runtime.close()


@dataclass
class Keys:
    admin: str
    viewer: str


@pytest.fixture
def keyed_client(make_client: Callable[..., TestClient]) -> tuple[TestClient, Keys]:
    """A client over a migrated app with one admin and one viewer credential."""
    client = make_client(jwt={"secret": "s" * 40})
    db = client.app.state.runtime.db  # type: ignore[attr-defined]
    keys = Keys(
        admin=auth.create_credential(db, "ops-admin", "admin", created_by="test"),
        viewer=auth.create_credential(db, "ops-viewer", "viewer", created_by="test"),
    )
    return client, keys


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


# GET /api/m1/health answers 503 when a check fails, as documented; on a busy machine a SELECT 1 or
# a PING can pass the 500 ms unhealthy bound or a check its 2 s timeout (seen once in CI): that is
# the machine, not what these tests look at. Pass it as ``health=UNGRADED_HEALTH``.
UNGRADED_HEALTH = {
    "latency_degraded_ms": 60_000.0,
    "latency_unhealthy_ms": 120_000.0,
    "check_timeout_s": 30.0,
}


@pytest.fixture
def prefect_port(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """A fake Prefect API answering healthy (pass it as ``prefect={"port": ...}``), so a replica's
    full health report (GET /api/m1/health asks Prefect) can pass."""
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    servers = fake_http_servers()
    start = next(servers)
    prefect = start({"/api/health": (200, True), "/api/flow_runs/filter": (200, [])})
    yield prefect.server_address[1]
    next(servers, None)
