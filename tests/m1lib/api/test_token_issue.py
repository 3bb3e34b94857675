"""POST /api/m1/tokens: an admin issues a capability token over HTTP, as ``issue_token`` does."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient

from m1lib import auth
from m1lib.api.problems import PROBLEM_JSON
from m1lib.vocabulary import Reason
from tests.m1lib.api.conftest import bearer

ISSUE = "/api/m1/tokens"
GRANT = {"toolName": "log_agent_run", "scope": "write", "subject": "agent-7"}


@pytest.fixture
def keyed(make_client: Callable[..., TestClient]) -> tuple[TestClient, dict[str, str]]:
    client = make_client(jwt={"secret": "s" * 40}, token={"ttl_s": 600})
    runtime = client.app.state.runtime  # type: ignore[attr-defined]
    runtime.start()  # revocation state kept fresh, so verify decides on it
    db = runtime.db
    keys = {
        role: auth.create_credential(db, f"ops-{role}", role, created_by="test")
        for role in ("viewer", "agent", "admin")
    }
    return client, keys


def test_an_admin_issues_a_token_that_verifies(
    keyed: tuple[TestClient, dict[str, str]], caplog: pytest.LogCaptureFixture
) -> None:
    client, keys = keyed
    policy = client.app.state.runtime.policy  # type: ignore[attr-defined]
    with caplog.at_level(logging.INFO, logger="m1.api.tokens"):
        response = client.post(ISSUE, json={**GRANT, "ttlS": 120}, headers=bearer(keys["admin"]))
    assert response.status_code == 201, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    token = body["token"]
    assert policy.verify(token, "log_agent_run", "write", subject="agent-7").allowed
    assert not policy.verify(token, "log_agent_run", "write", subject="agent-8").allowed
    claims = policy.codec.decode(token)
    assert (body["jti"], body["toolName"], body["scope"], body["subject"]) == (
        claims["jti"],
        "log_agent_run",
        "write",
        "agent-7",
    )
    assert body["expiresIn"] == 120
    assert datetime.fromisoformat(body["expiresAt"]).timestamp() == claims["exp"]
    assert datetime.fromisoformat(body["issuedAt"]).timestamp() == claims["iat"]
    # introspection (an agent may) sees it active; the log names the actor and never the token
    introspected = client.post(
        f"{ISSUE}/introspect", json={"token": token}, headers=bearer(keys["agent"])
    ).json()
    assert (introspected["active"], introspected["jti"]) == (True, body["jti"])
    assert "ops-admin" in caplog.text
    assert body["jti"] in caplog.text
    assert token not in caplog.text


def test_the_lifetime_defaults_to_the_setting(keyed: tuple[TestClient, dict[str, str]]) -> None:
    client, keys = keyed
    body = client.post(ISSUE, json=GRANT, headers=bearer(keys["admin"])).json()
    assert body["expiresIn"] == 600


@pytest.mark.parametrize(
    ("change", "path", "problem"),
    [
        ({"toolName": "no_such_tool"}, "/toolName", "is not a registered tool"),
        ({"toolName": ""}, "/toolName", "at least 1 character"),
        ({"toolName": "t" * 129}, "/toolName", "at most 128 characters"),
        ({"scope": "root"}, "/scope", "'read', 'write' or 'execute'"),
        ({"scope": "read"}, "/scope", "read is below the write that log_agent_run needs"),
        ({"subject": " "}, "/subject", "is blank"),
        ({"subject": "a\nb"}, "/subject", "holds a control character (U+000A)"),
        ({"subject": "s" * 256}, "/subject", "at most 255 characters"),
        ({"ttlS": 0}, "/ttlS", "greater than or equal to 1"),
        ({"ttlS": 601}, "/ttlS", "601 s is not a lifetime M1 issues"),
        ({"ttlS": 86401}, "/ttlS", "less than or equal to 86400"),
        ({"ttlS": "60"}, "/ttlS", "valid integer"),
        ({"ttlS": 60.0}, "/ttlS", "valid integer"),
        ({"ttlS": True}, "/ttlS", "valid integer"),
        ({"sub": "agent-7"}, "/sub", "Extra inputs are not permitted"),
    ],
)
def test_a_bad_grant_is_a_422_naming_the_member(
    keyed: tuple[TestClient, dict[str, str]], change: dict[str, Any], path: str, problem: str
) -> None:
    client, keys = keyed
    response = client.post(ISSUE, json={**GRANT, **change}, headers=bearer(keys["admin"]))
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    errors = response.json()["errors"]
    assert [error["path"] for error in errors] == [path]
    assert problem in errors[0]["problem"]


def test_an_unknown_tool_lists_the_registered_ones(
    keyed: tuple[TestClient, dict[str, str]],
) -> None:
    client, keys = keyed
    response = client.post(ISSUE, json={**GRANT, "toolName": "nope"}, headers=bearer(keys["admin"]))
    assert "log_agent_run" in response.json()["errors"][0]["allowed"]


@pytest.mark.parametrize("role", ["viewer", "agent"])
def test_only_an_admin_issues(keyed: tuple[TestClient, dict[str, str]], role: str) -> None:
    client, keys = keyed
    response = client.post(ISSUE, json=GRANT, headers=bearer(keys[role]))
    assert response.status_code == 403
    assert "issue_tokens permission, which the admin role has" in response.json()["detail"]
    assert client.post(ISSUE, json=GRANT).status_code == 401


def test_without_a_signing_key_it_is_a_503(make_client: Callable[..., TestClient]) -> None:
    client = make_client()  # no M1_JWT_SECRET and no generated one: no policy engine
    db = client.app.state.runtime.db  # type: ignore[attr-defined]
    assert client.app.state.runtime.policy is None  # type: ignore[attr-defined]
    key = auth.create_credential(db, "ops-admin", "admin", created_by="test")
    response = client.post(ISSUE, json=GRANT, headers=bearer(key))
    assert response.status_code == 503
    assert "no signing key" in response.json()["detail"]
    assert int(response.headers["retry-after"]) >= 1


def test_a_revoked_issued_token_is_denied(keyed: tuple[TestClient, dict[str, str]]) -> None:
    client, keys = keyed
    body = client.post(ISSUE, json=GRANT, headers=bearer(keys["admin"])).json()
    revoked = client.post(
        f"{ISSUE}/revoke", json={"token": body["token"]}, headers=bearer(keys["admin"])
    )
    assert revoked.status_code == 200, revoked.text
    policy = client.app.state.runtime.policy  # type: ignore[attr-defined]
    decision = policy.verify(body["token"], "log_agent_run", "write")
    assert (decision.allowed, decision.reason) == (False, Reason.REVOKED)
