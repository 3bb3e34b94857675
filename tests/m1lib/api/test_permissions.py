"""The permission table over every route: which of viewer, agent, service and admin each operation
lets in.

Every operation of the OpenAPI document is called with a key of each role; a role the table lets
in gets anything but 401 and 403 (a 2xx, or a 4xx about the request itself), any other role a 403
naming the permission. The table is written out here, apart from ``m1lib.auth.PERMISSIONS``, so a
change to either shows up as a failure.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from m1lib import auth
from m1lib.api.problems import PROBLEM_JSON
from tests.m1lib.api.conftest import bearer
from tests.m1lib.api.test_auth import ADMIN, PUBLIC

# Operations an agent may call (record events, introspect tokens); nothing else lets it in.
AGENT = {("POST", "/api/m1/events"), ("POST", "/api/m1/tokens/introspect")}
# Operations a viewer may not call: the admin column, and recording events.
NOT_VIEWER = {*ADMIN, ("POST", "/api/m1/events")}
ROLES = ("viewer", "agent", "service", "admin")


def allowed(role: str, operation: tuple[str, str]) -> bool:
    if role == "admin":
        return True
    if role == "agent":
        return operation in AGENT
    if role == "service":  # M1's flow runs and CLI: what a viewer may, and recording events
        return operation not in ADMIN
    return operation not in NOT_VIEWER


def _streams(answers: dict[str, Any]) -> bool:
    return any("text/event-stream" in (answer.get("content") or {}) for answer in answers.values())


@pytest.fixture
def table_client(
    make_client: Callable[..., TestClient], prefect_port: int
) -> tuple[TestClient, dict[str, str]]:
    limits = {f"{kind}_per_min": 10**6 for kind in ("read", "query", "admin", "login", "ingest")}
    client = make_client(jwt={"secret": "s" * 40}, ratelimit=limits, prefect={"port": prefect_port})
    db = client.app.state.runtime.db  # type: ignore[attr-defined]
    keys = {
        role: auth.create_credential(db, f"t-{role}", role, created_by="test") for role in ROLES
    }
    return client, keys


def test_each_role_gets_exactly_its_routes(table_client: tuple[TestClient, dict[str, str]]) -> None:
    client, keys = table_client
    paths = client.get("/openapi.json").json()["paths"]
    seen: dict[str, set[tuple[str, str]]] = {role: set() for role in ROLES}
    for path, operations in paths.items():
        for method, operation in operations.items():
            op = (method.upper(), path)
            if op in PUBLIC:
                continue
            url = path.replace("{command_id}", "1").replace("{jti}", "some-jti")
            url = url.replace("{tool}", "some-tool")
            for role in ROLES:
                if allowed(role, op) and _streams(operation.get("responses", {})):
                    continue  # a stream never ends: its own tests cover who may open it
                response = client.request(method.upper(), url, headers=bearer(keys[role]), json={})
                if allowed(role, op):
                    assert response.status_code not in {401, 403}, (role, op, response.text)
                    assert response.status_code < 500, (role, op, response.text)
                    seen[role].add(op)
                else:
                    assert response.status_code == 403, (role, op, response.text)
                    assert response.headers["content-type"].startswith(PROBLEM_JSON)
                    if method != "head":  # HEAD: the GET's status and headers, no body
                        detail = response.json()["detail"]
                        assert f"credential 't-{role}' is {role}" in detail
    assert seen["agent"] == AGENT  # both exist, and the agent reached nothing else
    assert ("POST", "/api/m1/tokens") in seen["admin"] - seen["viewer"]
    assert seen["service"] == seen["viewer"] | AGENT  # reads, records, introspects; no admin
    assert len(seen["viewer"]) >= 8


def test_a_session_cookie_of_an_agent_reads_nothing(
    table_client: tuple[TestClient, dict[str, str]],
) -> None:
    """A browser logged in with an agent's key gets no dashboard data: the cookie is the role."""
    client, keys = table_client
    assert client.post("/api/m1/session", json={"key": keys["agent"]}).status_code == 200
    assert client.get("/api/m1/replicas").status_code == 403
    assert client.get("/api/m1/dashboard/templates").status_code == 403


def test_the_agent_counts_introspection_as_queries_and_ingest_apart(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client(jwt={"secret": "s" * 40}, ratelimit={"query_per_min": 1})
    db = client.app.state.runtime.db  # type: ignore[attr-defined]
    key = auth.create_credential(db, "t-agent", "agent", created_by="test")
    introspect = [
        client.post("/api/m1/tokens/introspect", json={"token": "a.b.c"}, headers=bearer(key))
        for _ in range(2)
    ]
    assert [r.status_code for r in introspect] == [200, 429]
    assert "query requests per minute" in introspect[1].json()["detail"]
    events = [{"metric": "error_alerts", "level": "warning", "source": "s", "message": "m"}]
    assert client.post("/api/m1/events", json=events, headers=bearer(key)).status_code == 202
