"""Bad text never reaches the database: every route refuses NUL (and its kin) with a 422 naming the
field, on SQLite (which would store it) and PostgreSQL (which would fail), and no response names
the database."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from m1lib import auth
from m1lib.api.problems import PROBLEM_JSON
from m1lib.db.models import ControlCommand
from tests.m1lib.api.conftest import Keys, bearer

# (method, url, json body, role, field the 422 names)
NUL_INPUTS = [
    ("GET", "/api/m1/tokens/a%00b/status", None, "viewer", "/jti"),
    ("GET", "/api/m1/tokens/revocations?toolName=a%00b", None, "viewer", "/toolName"),
    ("GET", "/api/m1/tokens/revocations?cursor=a%00b", None, "viewer", "/cursor"),
    ("POST", "/api/m1/tokens/revoke", {"jti": "a\x00b"}, "admin", "/jti"),
    ("POST", "/api/m1/tokens/revoke", {"jti": "ok", "reason": "r\x00"}, "admin", "/reason"),
    ("POST", "/api/m1/tokens/revoke-all", {"subject": "a\x00b"}, "admin", "/subject"),
    ("POST", "/api/m1/tokens/revoke-all", {"toolName": "t\x00"}, "admin", "/toolName"),
    ("POST", "/api/m1/tokens/revoke-all", {"subject": "s", "reason": "\x00"}, "admin", "/reason"),
    ("POST", "/api/m1/control/commands", {"name": "cache.evict\x00"}, "admin", "/name"),
    ("POST", "/api/m1/control/commands", {"name": "cache.evict", "target": "r\x00"}, "admin", "/target"),
    ("POST", "/api/m1/control/commands", {"name": "cache.evict", "args": {"k": ["a", "\x00"]}}, "admin", "/args/k/1"),
    ("POST", "/api/m1/control/commands", {"name": "cache.evict", "args": {"k\x00": 1}}, "admin", "/args"),
    ("POST", "/api/m1/session", {"key": "m1_\x00"}, "viewer", "/key"),
    ("POST", "/api/m1/tokens", {"toolName": "t\x00", "scope": "read", "subject": "a"}, "admin", "/toolName"),
    ("POST", "/api/m1/tokens", {"toolName": "tool_policy_check", "scope": "read", "subject": "a\x00"}, "admin", "/subject"),
    ("POST", "/api/m1/events", [{"metric": "error_alerts", "level": "warning", "source": "s", "message": "m\x00"}], "admin", "/0/message"),
]  # fmt: skip


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend_client(
    request: pytest.FixtureRequest, make_client: Callable[..., TestClient]
) -> tuple[TestClient, dict[str, str]]:
    """A migrated app on SQLite or on this run's PostgreSQL database, with a key of each role."""
    overrides: dict[str, Any] = {"jwt": {"secret": "s" * 40}}
    if request.param == "postgres":
        overrides["database"] = {"url": request.getfixturevalue("pg_url")}
    client = make_client(**overrides)
    db = client.app.state.runtime.db  # type: ignore[attr-defined]
    suffix = uuid.uuid4().hex[:8]
    keys = {
        role: auth.create_credential(db, f"{role}-{suffix}", role, created_by="test")
        for role in ("admin", "viewer")
    }
    return client, keys


@pytest.mark.parametrize(("method", "url", "body", "role", "field"), NUL_INPUTS)
def test_nul_is_a_422_naming_the_field_and_no_database_detail(
    backend_client: tuple[TestClient, dict[str, str]],
    method: str,
    url: str,
    body: dict[str, Any] | None,
    role: str,
    field: str,
) -> None:
    client, keys = backend_client
    response = client.request(method, url, json=body, headers=bearer(keys[role]))
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    problem = response.json()
    assert [error["path"] for error in problem["errors"]] == [field]
    assert any(word in problem["errors"][0]["problem"] for word in ("NUL", "pattern"))
    for detail in ("postgres", "127.0.0.1", "5432", "m1_test", "sqlite", ".db", "retry"):
        assert detail not in response.text.lower()


def test_a_refused_nul_leaves_nothing_in_sqlite(
    keyed_client: tuple[TestClient, Keys],
) -> None:
    """SQLite would store a NUL where PostgreSQL fails: nothing may arrive there either."""
    client, keys = keyed_client
    runtime = client.app.state.runtime  # type: ignore[attr-defined]
    admin = bearer(keys.admin)
    client.post("/api/m1/tokens/revoke", json={"jti": "a\x00b"}, headers=admin)
    client.post("/api/m1/tokens/revoke-all", json={"subject": "a\x00b"}, headers=admin)
    command = {"name": "cache.evict", "target": "r\x00", "args": {"k": "\x00"}}
    client.post("/api/m1/control/commands", json=command, headers=admin)
    assert runtime.revocations.get_audit_log().items == []
    with runtime.db.transaction() as session:
        assert session.scalars(select(ControlCommand)).all() == []


@pytest.mark.parametrize(
    ("url", "field"),
    [
        ("/api/m1/replicas?within_s=nan", "/within_s"),
        ("/api/m1/replicas?within_s=1e400", "/within_s"),
        ("/api/m1/control/commands/99999999999999999999999", "/command_id"),
        ("/api/m1/control/commands/0", "/command_id"),
    ],
)
def test_numbers_out_of_range_are_a_422_not_a_500(
    backend_client: tuple[TestClient, dict[str, str]], url: str, field: str
) -> None:
    client, keys = backend_client
    response = client.get(url, headers=bearer(keys["viewer"]))
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["path"] == field
