"""Token routes over a small app: the token router, problem handlers, a real manager on PostgreSQL.

Auth is swapped through ``dependency_overrides`` (its own tests live in test_auth.py); the actor
checks below prove the credential's name, not a body field, lands in records and audits.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import jwt
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from m1lib.api.deps import REQUIRE, Principal
from m1lib.api.problems import PROBLEM_JSON, install_problem_handlers
from m1lib.api.routes import tokens
from m1lib.auth import Role
from m1lib.db.session import Database
from m1lib.policy import PolicyEngine, Scope
from m1lib.revocation import RevocationManager
from m1lib.settings import Settings
from m1lib.tokens import TOKEN_TYPE
from tests.m1lib.revocation.revocation_proc import create_database
from tests.services import PG_SERVER, TcpProxy, drop_database

pytestmark = pytest.mark.postgres

SECRET = "s" * 48
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.fixture(scope="module")
def database_name(pg_url: str) -> Iterator[str]:
    name = create_database()
    yield name
    drop_database(name)


class Api:
    """One test app: its client, its manager and its policy engine."""

    def __init__(
        self, client: TestClient, manager: RevocationManager, policy: PolicyEngine
    ) -> None:
        self.client = client
        self.manager = manager
        self.policy = policy

    def token(self, tool: str = "tool_policy_check", subject: str = "agent-1") -> str:
        return self.policy.issue_token(tool, self.policy.tools[tool].scope, subject=subject)

    def claims(self, token: str) -> dict[str, Any]:
        return self.policy.codec.decode(token)

    def expired_token(self) -> str:
        """Signed with this deployment's key, but its lifetime ended a minute ago."""
        codec = self.policy.codec
        now = int(time.time())
        claims = {
            "iss": codec.issuer,
            "aud": codec.audience,
            "sub": "agent-1",
            "toolName": "tool_policy_check",
            "scope": "read",
            "jti": new_jti(),
            "iat": now - 120,
            "nbf": now - 120,
            "exp": now - 60,
        }
        headers = {"kid": codec.kid, "typ": TOKEN_TYPE}
        return jwt.encode(claims, SECRET, algorithm="HS256", headers=headers)


@pytest.fixture
def make_api(
    make_settings: Callable[..., Settings], database_name: str
) -> Iterator[Callable[..., Api]]:
    engine = create_engine(f"{PG_SERVER}/{database_name}")
    with engine.begin() as connection:  # each test starts from empty tables
        connection.execute(
            text("TRUNCATE revoked_tokens, revocation_rules, revocation_audit RESTART IDENTITY")
        )
    engine.dispose()
    built: list[tuple[TestClient, RevocationManager, Database]] = []

    def factory(*, url: str | None = None, role: Role = Role.ADMIN, name: str = "ops-alice") -> Api:
        settings = make_settings(
            database={"url": url or f"{PG_SERVER}/{database_name}", "connect_timeout_s": 1},
            jwt={"secret": SECRET},
        )
        db = Database(settings)
        manager = RevocationManager(settings=settings, db=db)
        manager.load()
        policy = PolicyEngine.from_settings(settings, revocations=manager)
        app = FastAPI()
        install_problem_handlers(app)
        app.include_router(tokens.router)
        app.state.runtime = SimpleNamespace(settings=settings, revocations=manager, policy=policy)
        principal = Principal(name, role)
        for dependency in REQUIRE.values():  # every permission: the routes' logic alone
            app.dependency_overrides[dependency] = lambda: principal
        client = TestClient(app, raise_server_exceptions=False)
        built.append((client, manager, db))
        return Api(client, manager, policy)

    yield factory
    for client, manager, db in built:
        client.close()
        manager.close()
        db.dispose()


def new_jti() -> str:
    return str(uuid.uuid4())


# -- revoke (RFC 7009) -----------------------------------------------------------------------------


def test_revoke_by_jti_as_json_records_the_credential_as_actor(
    make_api: Callable[..., Api],
) -> None:
    api = make_api(name="ops-alice")
    jti = new_jti()
    response = api.client.post(
        "/api/m1/tokens/revoke",
        json={"jti": jti, "reason": "leaked", "revoked_by": "mallory", "actor": "mallory"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["revoked"], body["alreadyRevoked"]) == (True, False)
    assert (body["record"]["jti"], body["record"]["revokedBy"]) == (jti, "ops-alice")
    assert api.manager.is_revoked(jti)
    assert api.manager.get_audit_log(limit=1).items[0].actor == "ops-alice"


def test_revoke_by_token_as_form_takes_tool_subject_and_expiry_from_it(
    make_api: Callable[..., Api],
) -> None:
    api = make_api()
    token = api.token("log_agent_run", "agent-5")
    claims = api.claims(token)
    response = api.client.post(
        "/api/m1/tokens/revoke",
        content=f"token={token}&token_type_hint=access_token&reason=rotated",
        headers=FORM,
    )
    assert response.status_code == 200, response.text
    record = response.json()["record"]
    assert (record["jti"], record["toolName"], record["subject"]) == (
        claims["jti"],
        "log_agent_run",
        "agent-5",
    )
    leeway = api.manager.settings.token.leeway_s
    expected = datetime.fromtimestamp(claims["exp"] + leeway, UTC)
    assert datetime.fromisoformat(record["expiresAt"]) == expected
    decision = api.policy.verify(token, "log_agent_run", Scope.WRITE)
    assert (decision.allowed, decision.reason) == (False, "revoked")


def test_revoke_is_idempotent(make_api: Callable[..., Api]) -> None:
    api = make_api()
    jti = new_jti()
    first = api.client.post("/api/m1/tokens/revoke", json={"jti": jti, "reason": "a"})
    again = api.client.post("/api/m1/tokens/revoke", content=f"jti={jti}&reason=b", headers=FORM)
    assert (first.status_code, again.status_code) == (200, 200)
    assert again.json()["alreadyRevoked"] is True
    assert again.json()["record"]["reason"] == "a"
    assert [e.action for e in api.manager.get_audit_log(limit=2).items] == [
        "revoke_repeat",
        "revoke",
    ]


def test_revoke_of_an_invalid_token_is_200_and_revokes_nothing(
    make_api: Callable[..., Api],
) -> None:
    api = make_api()
    response = api.client.post("/api/m1/tokens/revoke", json={"token": "not.a.token"})
    assert response.status_code == 200
    assert response.json()["revoked"] is False
    assert api.manager.get_audit_log().items == []


def test_revoke_rejects_a_jti_that_is_not_the_tokens(make_api: Callable[..., Api]) -> None:
    api = make_api()
    response = api.client.post(
        "/api/m1/tokens/revoke", json={"token": api.token(), "jti": new_jti()}
    )
    assert response.status_code == 400
    assert response.json()["errors"][0]["path"] == "jti"


@pytest.mark.parametrize(
    ("content", "headers", "status", "path"),
    [
        ('{"reason": "x"}', {"Content-Type": "application/json"}, 422, "/"),
        ('{"jti": ""}', {"Content-Type": "application/json"}, 422, "/jti"),
        ("[1]", {"Content-Type": "application/json"}, 422, "/"),
        ("{oops", {"Content-Type": "application/json"}, 422, "/"),
        ("jti=a&jti=b", FORM, 422, "/jti"),
        ("jti=a", {"Content-Type": "text/plain"}, 415, None),
    ],
)
def test_revoke_rejects_bad_bodies_as_problems(
    make_api: Callable[..., Api],
    content: str,
    headers: dict[str, str],
    status: int,
    path: str | None,
) -> None:
    response = make_api().client.post("/api/m1/tokens/revoke", content=content, headers=headers)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    if path is not None:
        assert response.json()["errors"][0]["path"] == path


def test_revoke_answers_503_with_retry_after_when_the_database_is_down(
    make_api: Callable[..., Api], database_name: str
) -> None:
    proxy = TcpProxy(5432)
    proxy.start()
    try:
        api = make_api(url=proxy.url_for(database_name))
        proxy.cut()
        jti = new_jti()
        response = api.client.post("/api/m1/tokens/revoke", json={"jti": jti, "reason": "r"})
        assert response.status_code == 503
        assert response.headers["content-type"].startswith(PROBLEM_JSON)
        assert int(response.headers["retry-after"]) >= 1
        assert "unavailable" in response.json()["detail"]
        assert not api.manager.is_revoked(jti)
    finally:
        proxy.cut()
    assert make_api().manager.get_record(jti) is None


# -- revoke-all ------------------------------------------------------------------------------------


def test_revoke_all_withdraws_one_tool(make_api: Callable[..., Api]) -> None:
    api = make_api(name="ops-bob")
    old_write, old_read = api.token("log_agent_run"), api.token("tool_policy_check")
    response = api.client.post(
        "/api/m1/tokens/revoke-all", json={"toolName": "log_agent_run", "reason": "withdrawn"}
    )
    assert response.status_code == 200, response.text
    rule = response.json()["rule"]
    assert (rule["toolName"], rule["subject"], rule["createdBy"]) == (
        "log_agent_run",
        None,
        "ops-bob",
    )
    assert api.policy.verify(old_write, "log_agent_run", Scope.WRITE).reason == "revoked"
    assert api.policy.verify(old_read, "tool_policy_check", Scope.READ).allowed


def test_revoke_all_needs_a_tool_or_subject_and_a_zoned_time(make_api: Callable[..., Api]) -> None:
    api = make_api()
    missing = api.client.post("/api/m1/tokens/revoke-all", json={"reason": "x"})
    assert missing.status_code == 422
    assert "toolName" in missing.json()["errors"][0]["problem"]
    naive = api.client.post(
        "/api/m1/tokens/revoke-all",
        json={"subject": "agent-1", "issuedBefore": "2026-01-01T00:00:00"},
    )
    assert naive.status_code == 422
    assert "time zone" in naive.json()["errors"][0]["problem"]


# -- introspect (RFC 7662) -------------------------------------------------------------------------


def test_introspect_active_token_gives_its_claims(make_api: Callable[..., Api]) -> None:
    api = make_api(role=Role.VIEWER)
    token = api.token("tool_policy_check", "agent-2")
    response = api.client.post("/api/m1/tokens/introspect", content=f"token={token}", headers=FORM)
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["active"] is True
    assert (body["toolName"], body["sub"], body["scope"]) == (
        "tool_policy_check",
        "agent-2",
        "read",
    )
    assert body["jti"] == api.claims(token)["jti"]


@pytest.mark.parametrize("kind", ["revoked", "garbage", "expired"])
def test_introspect_inactive_token_gives_only_active_false(
    make_api: Callable[..., Api], kind: str
) -> None:
    api = make_api(role=Role.VIEWER)
    if kind == "garbage":
        token = "a.b.c"
    elif kind == "expired":
        token = api.expired_token()
    else:
        token = api.token()
        api.manager.revoke_token(str(api.claims(token)["jti"]), "r", "alice")
    response = api.client.post("/api/m1/tokens/introspect", json={"token": token})
    assert response.status_code == 200
    assert response.json() == {"active": False}


# -- reads -----------------------------------------------------------------------------------------


def test_revocations_list_pages_by_cursor_and_filters_by_tool(
    make_api: Callable[..., Api],
) -> None:
    api = make_api(role=Role.VIEWER)
    tool = f"tool-{uuid.uuid4().hex[:6]}"
    jtis = [new_jti() for _ in range(3)]
    for jti in jtis:
        api.manager.revoke_token(jti, "r", "alice", tool_name=tool)
    first = api.client.get("/api/m1/tokens/revocations", params={"toolName": tool, "limit": 2})
    assert first.status_code == 200
    page = first.json()
    assert [item["jti"] for item in page["items"]] == [jtis[2], jtis[1]]
    second = api.client.get(
        "/api/m1/tokens/revocations",
        params={"toolName": tool, "limit": 2, "cursor": page["nextCursor"]},
    ).json()
    assert [item["jti"] for item in second["items"]] == [jtis[0]]
    assert second["nextCursor"] is None
    bad = api.client.get("/api/m1/tokens/revocations", params={"cursor": "nope"})
    assert bad.status_code == 400
    assert bad.json()["errors"][0]["path"] == "cursor"
    assert api.client.get("/api/m1/tokens/revocations", params={"limit": 0}).status_code == 422


def test_status_reports_database_and_local_state(make_api: Callable[..., Api]) -> None:
    api = make_api(role=Role.VIEWER)
    jti = new_jti()
    unknown = api.client.get(f"/api/m1/tokens/{jti}/status").json()
    assert unknown == {"jti": jti, "revoked": False, "enforcedHere": False, "record": None}
    api.manager.revoke_token(jti, "r", "alice", tool_name="web_search")
    known = api.client.get(f"/api/m1/tokens/{jti}/status").json()
    assert (known["revoked"], known["enforcedHere"], known["record"]["revokedBy"]) == (
        True,
        True,
        "alice",
    )
    assert api.client.get(f"/api/m1/tokens/{'x' * 65}/status").status_code == 422


@pytest.mark.parametrize(
    "issued_before",
    [
        "9999-12-31T23:59:59Z",  # + the token lifetime overflowed: a 500
        "0001-01-01T00:00:00+23:59",  # UTC before year 1: a 500
        "0001-01-01T00:00:00Z",  # a rule that expired before it was made
        "0.5",  # pydantic read it as a Unix time
        "1e400",
    ],
)
def test_revoke_all_takes_only_a_documented_time(
    make_api: Callable[..., Api], issued_before: str
) -> None:
    api = make_api()
    for request in (
        {"json": {"subject": "agent-1", "issuedBefore": issued_before}},
        {"content": f"subject=agent-1&issuedBefore={issued_before}", "headers": FORM},
    ):
        response = api.client.post("/api/m1/tokens/revoke-all", **request)  # type: ignore[arg-type]
        assert response.status_code == 422, response.text
        assert response.json()["errors"][0]["path"] == "/issuedBefore"
    assert api.manager.get_rules() == []


def test_revoke_all_takes_camel_case_names_only(make_api: Callable[..., Api]) -> None:
    response = make_api().client.post(
        "/api/m1/tokens/revoke-all", json={"subject": "agent-1", "tool_name": "web_search"}
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["path"] == "/tool_name"


def test_status_of_a_jti_holding_a_slash(make_api: Callable[..., Api]) -> None:
    api = make_api(role=Role.VIEWER)
    jti = f"{new_jti()}/part"  # a jti is any text; revoke takes it, so status must find it
    api.manager.revoke_token(jti, "r", "alice")
    response = api.client.get(f"/api/m1/tokens/{jti.replace('/', '%2F')}/status")
    assert response.status_code == 200, response.text
    assert (response.json()["jti"], response.json()["revoked"]) == (jti, True)
