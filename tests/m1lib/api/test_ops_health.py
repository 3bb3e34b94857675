"""GET /api/m1/health: the replica runs every check itself, Prefect included, as health+json."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient

from m1lib import auth
from m1lib.ops.report import COMPONENTS
from tests.fake_http import FakeHttp, Routes, fake_http_servers
from tests.m1lib.api.conftest import UNGRADED_HEALTH, bearer
from tests.services import free_port

HEALTH_JSON = "application/health+json"
JWT_SECRET = "s" * 40


@pytest.fixture
def fake_http() -> Iterator[Callable[[Routes], FakeHttp]]:
    yield from fake_http_servers()


@pytest.fixture(autouse=True)
def _no_outside_prefect(monkeypatch: pytest.MonkeyPatch) -> None:
    """The replica's Prefect is the one its settings name, whatever this shell has."""
    monkeypatch.delenv("PREFECT_API_URL", raising=False)


def client_with_prefect(
    make_client: Callable[..., TestClient], port: int
) -> tuple[TestClient, str]:
    client = make_client(jwt={"secret": JWT_SECRET}, prefect={"port": port}, health=UNGRADED_HEALTH)
    db = client.app.state.runtime.db  # type: ignore[attr-defined]
    key = auth.create_credential(db, "health-viewer", "viewer", created_by="test")
    return client, key


def test_health_passes_with_every_component_when_prefect_answers(
    make_client: Callable[..., TestClient], fake_http: Callable[[Routes], FakeHttp]
) -> None:
    prefect = fake_http({"/api/health": (200, True), "/api/flow_runs/filter": (200, [])})
    port = urlsplit(prefect.url).port
    assert port is not None
    client, key = client_with_prefect(make_client, port)
    response = client.get("/api/m1/health", headers=bearer(key))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith(HEALTH_JSON)
    body = response.json()
    assert body["status"] in {"pass", "warn"}
    components = {entry["componentId"] for entries in body["checks"].values() for entry in entries}
    assert components == set(COMPONENTS)
    for name, entries in body["checks"].items():
        component, _, measurement = name.partition(":")
        assert component in COMPONENTS, name
        assert measurement, name
        for entry in entries:
            assert {"observedValue", "observedUnit", "status", "time"} <= set(entry)
    assert "/api/health" in prefect.requests  # the watcher is watched: the replica asked Prefect
    api = body["checks"]["api:responseTime"]
    assert api[0]["status"] == "pass"
    assert api[0]["output"].startswith(f"replica {body['serviceId']}:")  # itself, in process


def test_health_fails_503_when_prefect_is_gone_and_shows_no_secret(
    make_client: Callable[..., TestClient],
) -> None:
    client, key = client_with_prefect(make_client, free_port())
    response = client.get("/api/m1/health", headers=bearer(key))
    assert response.status_code == 503
    assert response.headers["content-type"].startswith(HEALTH_JSON)
    assert response.headers["retry-after"] == "5"
    body = response.json()
    assert body["status"] == "fail"
    (prefect,) = body["checks"]["prefect:responseTime"]
    assert prefect["status"] == "fail"
    assert prefect["recommendations"][-1] == "Runbook: docs/runbooks/prefect.md"
    assert body["checks"]["database:responseTime"][0]["status"] == "pass"
    assert JWT_SECRET not in response.text
    assert key not in response.text


def test_health_needs_a_credential(make_client: Callable[..., TestClient]) -> None:
    client, _ = client_with_prefect(make_client, free_port())
    assert client.get("/api/m1/health").status_code == 401
