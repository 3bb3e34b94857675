"""The auth matrix: every route answers 401 without credentials and 403 with too weak a role."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from m1lib import auth
from m1lib.api.problems import PROBLEM_JSON
from tests.m1lib.api.conftest import Keys, bearer

PUBLIC = {
    ("GET", "/health/live"),
    ("HEAD", "/health/live"),
    ("GET", "/health/ready"),
    ("HEAD", "/health/ready"),
    ("POST", "/api/m1/session"),
    ("DELETE", "/api/m1/session"),
}


# The admin column of the auth matrix (docs/contracts.md); every other non-public route is viewer
# (but recording events, which the agent and admin roles have: test_permissions.py).
ADMIN = {
    ("POST", "/api/m1/control/commands"),
    ("POST", "/api/m1/tokens"),
    ("POST", "/api/m1/tokens/revoke"),
    ("POST", "/api/m1/tokens/revoke-all"),
    ("POST", "/api/m1/healing/pause"),
    ("POST", "/api/m1/healing/resume"),
    ("PUT", "/api/m1/cache/policy/{tool}"),
    ("DELETE", "/api/m1/cache/policy/{tool}"),
}
NOT_VIEWER = {*ADMIN, ("POST", "/api/m1/events")}


STREAMS = {("GET", "/api/m1/dashboard/stream")}


def _operations(client: TestClient) -> list[tuple[str, str]]:
    """Every operation of the published OpenAPI schema."""
    paths = client.get("/openapi.json").json()["paths"]
    return [(method.upper(), path) for path, ops in paths.items() for method in ops]


def _path(path: str) -> str:
    return path.replace("{command_id}", "1").replace("{jti}", "some-jti").replace("{tool}", "t")


def _call(client: TestClient, method: str, path: str, headers: dict[str, str] | None = None) -> Any:
    return client.request(method, _path(path), headers=headers or {}, json={})


def test_every_route_is_public_or_needs_a_credential(keyed_client: tuple[TestClient, Keys]) -> None:
    client, _ = keyed_client
    operations = _operations(client)
    assert len(operations) >= 6
    for method, path in operations:
        response = _call(client, method, path)
        if (method, path) in PUBLIC:
            assert response.status_code not in {401, 403}, (method, path)
        else:
            assert response.status_code == 401, (method, path, response.text)
            assert response.headers["content-type"].startswith(PROBLEM_JSON)
            assert response.headers["www-authenticate"].startswith("Bearer")


def test_admin_routes_answer_403_to_a_viewer(keyed_client: tuple[TestClient, Keys]) -> None:
    client, keys = keyed_client
    operations = [op for op in _operations(client) if op not in PUBLIC]
    assert any(op in ADMIN for op in operations), "expected at least one admin route"
    for method, path in operations:
        if (method, path) in STREAMS:
            continue  # endless with a valid key: tests/m1lib/api/test_stream.py
        response = _call(client, method, path, bearer(keys.viewer))
        if (method, path) in NOT_VIEWER:
            assert response.status_code == 403, (method, path, response.text)
            assert "admin role" in response.json()["detail"]
        else:
            assert response.status_code not in {401, 403}, (method, path, response.text)


def test_viewer_routes_accept_a_viewer_and_an_admin(keyed_client: tuple[TestClient, Keys]) -> None:
    client, keys = keyed_client
    for key in (keys.viewer, keys.admin):
        assert client.get("/api/m1/replicas", headers=bearer(key)).status_code == 200


def test_admin_routes_are_closed_with_no_credential_configured(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client()
    response = client.post("/api/m1/control/commands", json={"name": "cache.evict"})
    assert response.status_code == 403
    assert "no API credential is configured" in response.json()["detail"]


def test_unknown_and_revoked_keys_are_refused(keyed_client: tuple[TestClient, Keys]) -> None:
    client, keys = keyed_client
    assert client.get("/api/m1/replicas", headers=bearer("m1_" + "x" * 43)).status_code == 401
    runtime = client.app.state.runtime  # type: ignore[attr-defined]
    auth.revoke_credential(runtime.db, "ops-viewer")
    runtime.credentials.refresh()
    response = client.get("/api/m1/replicas", headers=bearer(keys.viewer))
    assert response.status_code == 401
    assert "unknown or revoked" in response.json()["detail"]


@pytest.mark.parametrize("header", ["Basic abc", "Bearer", "Token m1_abc", "bearer  "])
def test_malformed_authorization_header_is_401_naming_the_form(
    keyed_client: tuple[TestClient, Keys], header: str
) -> None:
    client, _ = keyed_client
    response = client.get("/api/m1/replicas", headers={"Authorization": header})
    assert response.status_code == 401
    assert "Bearer <API key>" in response.json()["detail"]


@pytest.mark.parametrize("param", ["key", "api_key", "token", "access_token"])
def test_a_key_in_the_url_is_never_accepted(
    keyed_client: tuple[TestClient, Keys], param: str
) -> None:
    client, keys = keyed_client
    assert client.get(f"/api/m1/replicas?{param}={keys.admin}").status_code == 401


def test_admin_issues_a_command_and_the_actor_is_the_credential_name(
    keyed_client: tuple[TestClient, Keys],
) -> None:
    client, keys = keyed_client
    response = client.post(
        "/api/m1/control/commands",
        json={"name": "cache.evict", "args": {}, "createdBy": "someone-else"},
        headers=bearer(keys.admin),
    )
    assert response.status_code == 202
    assert response.json()["createdBy"] == "ops-admin"


def test_key_check_uses_a_constant_time_comparison(
    keyed_client: tuple[TestClient, Keys], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, keys = keyed_client
    calls: list[tuple[str, str]] = []
    real = auth.hmac.compare_digest

    def spy(a: str, b: str) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    assert client.get("/api/m1/replicas", headers=bearer(keys.viewer)).status_code == 200
    assert calls, "authentication must compare with hmac.compare_digest"
