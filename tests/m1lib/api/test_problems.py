"""One error format: every error class answers application/problem+json."""

from __future__ import annotations

from fastapi.testclient import TestClient

from m1lib.api.problems import PROBLEM_JSON
from tests.m1lib.api.conftest import Keys, bearer


def _is_problem(response, status: int) -> dict:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    body = response.json()
    assert body["status"] == status
    assert {"type", "title", "detail"} <= set(body)
    return body


def test_422_names_path_problem_and_allowed(keyed_client: tuple[TestClient, Keys]) -> None:
    client, keys = keyed_client
    response = client.post(
        "/api/m1/control/commands",
        json={"name": "cache.evict", "ttlS": 0},
        headers=bearer(keys.admin),
    )
    body = _is_problem(response, 422)
    assert body["errors"][0]["path"] == "/ttlS"
    assert "greater than or equal to 1" in body["errors"][0]["problem"]


def test_400_for_a_valid_body_the_server_cannot_answer(
    keyed_client: tuple[TestClient, Keys],
) -> None:
    client, keys = keyed_client
    response = client.post(
        "/api/m1/control/commands", json={"name": "reboot.world"}, headers=bearer(keys.admin)
    )
    body = _is_problem(response, 400)
    assert "cache.evict" in body["errors"][0]["allowed"]
    assert body["errors"] == [
        {
            "path": "/name",
            "problem": "'reboot.world' is not a command",
            "allowed": client.app.state.runtime.registry.names(),  # type: ignore[attr-defined]
        }
    ]


def test_401_403_404_are_problems(keyed_client: tuple[TestClient, Keys]) -> None:
    client, keys = keyed_client
    _is_problem(client.get("/api/m1/replicas"), 401)
    _is_problem(
        client.post(
            "/api/m1/control/commands", json={"name": "cache.evict"}, headers=bearer(keys.viewer)
        ),
        403,
    )
    _is_problem(client.get("/nowhere"), 404)


DOWN = "postgresql://m1owner:hunter22@127.0.0.1:1/m1proddb"
SERVER_DETAILS = ("m1owner", "hunter22", "127.0.0.1", "m1proddb", "postgresql", ":1")


def test_503_when_the_database_is_down_names_no_server(make_client) -> None:  # type: ignore[no-untyped-def]
    client = make_client(migrated=False, database={"url": DOWN, "connect_timeout_s": 1})
    response = client.get("/api/m1/replicas", headers=bearer("m1_anything"))
    body = _is_problem(response, 503)
    assert body["detail"].startswith("the database is unavailable")
    assert f"retry in {response.headers['retry-after']} s" in body["detail"]
    for detail in SERVER_DETAILS:
        assert detail not in response.text


def test_readiness_with_the_database_down_names_no_server(make_client) -> None:  # type: ignore[no-untyped-def]
    client = make_client(migrated=False, database={"url": DOWN, "connect_timeout_s": 1})
    response = client.get("/health/ready")  # public: no credential needed to read it
    body = _is_problem(response, 503)
    assert body["checks"]["database"]["ok"] is False
    for detail in SERVER_DETAILS:
        assert detail not in response.text
