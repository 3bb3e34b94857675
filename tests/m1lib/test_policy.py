"""The policy engine: the seed's scenarios that need no database, the registry and the events."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from m1lib.errors import InputError, SettingsError, UsageError
from m1lib.policy import (
    PolicyEngine,
    Reason,
    Scope,
    Tool,
    load_tool_registry,
)
from m1lib.settings import Settings
from m1lib.tokens import TokenCodec

SECRET = "p" * 40
OPERATOR_TOOLS = """
[tools.read_secrets]
scope = "read"
requires_approval = true
description = "Read the vault: a read, but approved."

[tools.web_search]
scope = "read"
"""


class AllowAll:
    """A RevocationCheck with nothing revoked and fresh state."""

    def __init__(self) -> None:
        self.seen: list[Mapping[str, Any]] = []

    def denial(self, claims: Mapping[str, Any]) -> Reason | None:
        self.seen.append(claims)
        return None


class EventLog:
    """A recorder that keeps what it is given."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, metric: str, /, **fields: Any) -> None:
        self.events.append((metric, fields))


@pytest.fixture
def tools_file(tmp_path: Path) -> Path:
    path = tmp_path / "tools.toml"
    path.write_text(OPERATOR_TOOLS)
    return path


@pytest.fixture
def make_engine(
    make_settings: Callable[..., Settings], tools_file: Path
) -> Callable[..., PolicyEngine]:
    def factory(**kwargs: Any) -> PolicyEngine:
        settings = make_settings(jwt={"secret": SECRET}, policy={"tools_file": tools_file})
        kwargs.setdefault("revocation", AllowAll())
        return PolicyEngine(settings=settings, codec=TokenCodec.from_settings(settings), **kwargs)

    return factory


@pytest.fixture
def engine(make_engine: Callable[..., PolicyEngine]) -> PolicyEngine:
    return make_engine()


def test_issue_then_verify_allows(engine: PolicyEngine) -> None:
    token = engine.issue_token("log_agent_run", Scope.WRITE, subject="agent-7")
    decision = engine.verify(token, "log_agent_run", Scope.WRITE, subject="agent-7")
    assert decision.allowed
    assert decision.reason is Reason.OK
    assert decision.tool_name == "log_agent_run"
    assert decision.scope is Scope.WRITE
    assert decision.requires_approval
    assert decision.claims is not None
    assert decision.claims["sub"] == "agent-7"


def test_verify_denies_an_unknown_tool(engine: PolicyEngine) -> None:
    token = engine.issue_token("log_agent_run", Scope.WRITE, subject="a")
    decision = engine.verify(token, "rm_rf", Scope.READ)
    assert not decision.allowed
    assert decision.reason is Reason.UNKNOWN_TOOL
    assert decision.claims is None


def test_issue_token_for_an_unknown_tool_names_the_allowed_tools(engine: PolicyEngine) -> None:
    with pytest.raises(InputError) as caught:
        engine.issue_token("rm_rf", Scope.READ, subject="a")
    assert caught.value.path == "tool_name"
    assert "'rm_rf'" in caught.value.problem
    assert caught.value.allowed == sorted(engine.tools)
    assert "log_agent_run" in caught.value.allowed


def test_read_tool_without_approval_needs_no_token(engine: PolicyEngine) -> None:
    decision = engine.verify(None, "tool_registry_list", Scope.READ)
    assert decision.allowed
    assert decision.reason is Reason.OK
    assert not decision.requires_approval


@pytest.mark.parametrize(
    ("tool", "scope"),
    [
        ("log_agent_run", Scope.WRITE),
        ("request_approval", Scope.EXECUTE),
        ("read_secrets", Scope.READ),  # a read flagged by the operator
        ("tool_registry_list", Scope.WRITE),  # asking to write makes it a write
    ],
)
def test_write_execute_and_flagged_reads_require_a_token(
    engine: PolicyEngine, tool: str, scope: Scope
) -> None:
    decision = engine.verify(None, tool, scope)
    assert not decision.allowed
    assert decision.reason is Reason.TOKEN_REQUIRED
    assert decision.requires_approval


def test_caller_cannot_talk_a_write_tool_down_to_read(engine: PolicyEngine) -> None:
    decision = engine.verify(None, "log_agent_run", Scope.READ)
    assert decision.reason is Reason.TOKEN_REQUIRED
    assert decision.scope is Scope.WRITE


def test_flagged_read_tool_accepts_its_token(engine: PolicyEngine) -> None:
    token = engine.issue_token("read_secrets", Scope.READ, subject="a")
    assert engine.verify(token, "read_secrets", Scope.READ).allowed


@pytest.mark.parametrize(
    ("granted", "asked", "allowed"),
    [
        (Scope.READ, Scope.READ, True),
        (Scope.READ, Scope.WRITE, False),
        (Scope.READ, Scope.EXECUTE, False),
        (Scope.WRITE, Scope.READ, True),
        (Scope.WRITE, Scope.WRITE, True),
        (Scope.WRITE, Scope.EXECUTE, False),
        (Scope.EXECUTE, Scope.READ, True),
        (Scope.EXECUTE, Scope.WRITE, True),
        (Scope.EXECUTE, Scope.EXECUTE, True),
    ],
)
def test_an_approval_covers_its_scope_rank_and_below(
    engine: PolicyEngine, granted: Scope, asked: Scope, allowed: bool
) -> None:
    token = engine.issue_token("read_secrets", granted, subject="a")
    decision = engine.verify(token, "read_secrets", asked)
    assert decision.allowed is allowed
    assert decision.reason is (Reason.OK if allowed else Reason.INSUFFICIENT_SCOPE)


def test_issue_token_below_the_tools_scope_is_refused(engine: PolicyEngine) -> None:
    with pytest.raises(InputError) as caught:
        engine.issue_token("log_agent_run", Scope.READ, subject="a")
    assert caught.value.path == "scope"
    assert caught.value.allowed == ["write", "execute"]


def test_token_for_subject_x_presented_as_subject_y_is_denied(engine: PolicyEngine) -> None:
    token = engine.issue_token("log_agent_run", Scope.WRITE, subject="agent-x")
    decision = engine.verify(token, "log_agent_run", Scope.WRITE, subject="agent-y")
    assert not decision.allowed
    assert decision.reason is Reason.SUBJECT_MISMATCH


def test_subject_is_checked_only_when_the_caller_states_it(engine: PolicyEngine) -> None:
    token = engine.issue_token("log_agent_run", Scope.WRITE, subject="agent-x")
    assert engine.verify(token, "log_agent_run", Scope.WRITE).allowed


def test_a_token_on_a_read_tool_that_needs_none_must_still_be_valid(engine: PolicyEngine) -> None:
    token = engine.issue_token("log_agent_run", Scope.WRITE, subject="a")
    assert engine.verify(token, "web_search", Scope.READ).reason is Reason.TOOL_MISMATCH
    assert engine.verify("not.a.token", "web_search", Scope.READ).reason is Reason.MALFORMED


def test_ttl_shortens_the_token_and_is_bounded(engine: PolicyEngine) -> None:
    token = engine.issue_token("log_agent_run", Scope.WRITE, subject="a", ttl=timedelta(minutes=1))
    claims = engine.verify(token, "log_agent_run", Scope.WRITE).claims
    assert claims is not None
    assert claims["exp"] - claims["iat"] == 60
    with pytest.raises(InputError, match="ttl"):
        engine.issue_token("log_agent_run", Scope.WRITE, subject="a", ttl=timedelta(hours=2))


def test_verify_checks_revocation_with_the_verified_claims(
    make_engine: Callable[..., PolicyEngine],
) -> None:
    revocation = AllowAll()
    engine = make_engine(revocation=revocation)
    token = engine.issue_token("log_agent_run", Scope.WRITE, subject="a")
    decision = engine.verify(token, "log_agent_run", Scope.WRITE)
    assert revocation.seen == [decision.claims]


def test_every_decision_records_a_policy_decisions_event(
    make_engine: Callable[..., PolicyEngine],
) -> None:
    log = EventLog()
    engine = make_engine(recorder=log)
    token = engine.issue_token("log_agent_run", Scope.WRITE, subject="agent-7")
    engine.verify(token, "log_agent_run", Scope.WRITE)
    engine.verify(None, "request_approval", Scope.EXECUTE, subject="agent-9")
    engine.verify(None, "nope", Scope.READ)
    assert [metric for metric, _ in log.events] == ["policy_decisions"] * 3
    first, second, third = (fields for _, fields in log.events)
    assert set(first) == {"toolName", "scope", "allowed", "reason", "subject", "checkMs"}
    assert first["toolName"] == "log_agent_run"
    assert (first["scope"], first["allowed"], first["reason"]) == ("write", True, "ok")
    assert first["subject"] == "agent-7"
    assert isinstance(first["checkMs"], float)
    assert first["checkMs"] >= 0
    assert (second["reason"], second["subject"], second["allowed"]) == (
        "token_required",
        "agent-9",
        False,
    )
    assert (third["reason"], third["subject"]) == ("unknown_tool", "")


def test_decision_claims_are_read_only(engine: PolicyEngine) -> None:
    token = engine.issue_token("log_agent_run", Scope.WRITE, subject="a")
    claims = engine.verify(token, "log_agent_run", Scope.WRITE).claims
    with pytest.raises(TypeError):
        claims["scope"] = "execute"  # type: ignore[index]


def test_verify_with_a_scope_that_is_not_one_raises(engine: PolicyEngine) -> None:
    with pytest.raises(InputError) as caught:
        engine.verify(None, "tool_registry_list", "admin")  # type: ignore[arg-type]
    assert caught.value.allowed == ["read", "write", "execute"]


def test_verify_accepts_scopes_as_plain_text(engine: PolicyEngine) -> None:
    token = engine.issue_token("log_agent_run", "write", subject="a")  # type: ignore[arg-type]
    assert engine.verify(token, "log_agent_run", "write").allowed  # type: ignore[arg-type]


# -- the registry ---------------------------------------------------------------------------------


def test_builtin_registry_holds_the_four_tools_and_the_validation_probe() -> None:
    tools = load_tool_registry()
    assert {name: (tool.scope, tool.requires_approval) for name, tool in tools.items()} == {
        "tool_registry_list": (Scope.READ, False),
        "tool_policy_check": (Scope.READ, False),
        "request_approval": (Scope.EXECUTE, True),
        "log_agent_run": (Scope.WRITE, True),
        "m1_validation_probe": (Scope.READ, True),  # marks the validation suite's probe tokens
    }


def test_operator_tools_are_added_to_the_builtin_ones(tools_file: Path) -> None:
    tools = load_tool_registry(tools_file)
    assert tools["read_secrets"] == Tool(
        "read_secrets", Scope.READ, True, "Read the vault: a read, but approved."
    )
    assert tools["web_search"].requires_approval is False
    assert "log_agent_run" in tools


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('[tools.log_agent_run]\nscope = "read"\n', "tools.log_agent_run: is a built-in tool"),
        ('[tools.x]\nscope = "admin"\n', "tools.x.scope: 'admin' is not a scope"),
        ('[tools.x]\nscope = "write"\nrequires_approval = false\n', "always need approval"),
        ('[tools.x]\nscope = "read"\nrequires_aproval = true\n', "tools.x.requires_aproval"),
        ('[tools."bad name"]\nscope = "read"\n', "not a tool name"),
        ("[tools.x\n", "not valid TOML"),
        ('[tool.x]\nscope = "read"\n', "tool: unknown; allowed: tools"),
    ],
)
def test_a_bad_tools_file_fails_naming_the_file_and_entry(
    tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "tools.toml"
    path.write_text(content)
    with pytest.raises(SettingsError, match="M1_POLICY_TOOLS_FILE") as caught:
        load_tool_registry(path)
    assert message in str(caught.value)


def test_a_missing_tools_file_fails_naming_the_variable(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"M1_POLICY_TOOLS_FILE.*cannot read"):
        load_tool_registry(tmp_path / "absent.toml")


# -- wiring -----------------------------------------------------------------------------------------


def test_from_settings_wires_the_revocation_manager_and_fails_closed_until_it_loads(
    make_settings: Callable[..., Settings],
) -> None:
    from m1lib.revocation import RevocationManager

    engine = PolicyEngine.from_settings(make_settings(jwt={"secret": SECRET}))
    manager = engine.revocations
    assert isinstance(manager, RevocationManager)
    try:
        token = engine.issue_token("log_agent_run", Scope.WRITE, subject="a")
        decision = engine.verify(token, "log_agent_run", Scope.WRITE)
        assert decision.reason is Reason.REVOCATION_STATE_STALE
    finally:
        manager.close()


def test_from_settings_without_a_revocation_module_is_a_usage_error(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "m1lib.revocation", None)
    with pytest.raises(UsageError, match=r"m1lib\.revocation\.RevocationManager"):
        PolicyEngine.from_settings(make_settings(jwt={"secret": SECRET}))


def test_from_settings_takes_the_callers_revocation_check_and_recorder(
    make_settings: Callable[..., Settings], tools_file: Path
) -> None:
    revocation, log = AllowAll(), EventLog()
    settings = make_settings(jwt={"secret": SECRET}, policy={"tools_file": tools_file})
    engine = PolicyEngine.from_settings(settings, revocations=revocation, recorder=log)
    assert engine.revocations is revocation
    assert engine.settings is settings
    assert "read_secrets" in engine.tools  # the operator's tools file, from the settings
    token = engine.issue_token("log_agent_run", Scope.WRITE, subject="a")
    assert engine.verify(token, "log_agent_run", Scope.WRITE).allowed
    assert revocation.seen
    assert [metric for metric, _ in log.events] == ["policy_decisions"]


def test_from_settings_with_a_revocation_check_needs_no_revocation_module(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "m1lib.revocation", None)
    engine = PolicyEngine.from_settings(
        make_settings(jwt={"secret": SECRET}), revocations=AllowAll()
    )
    assert isinstance(engine.revocations, AllowAll)


def test_from_settings_without_a_secret_is_a_usage_error(
    make_settings: Callable[..., Settings],
) -> None:
    with pytest.raises(UsageError, match="M1_JWT_SECRET"):
        PolicyEngine.from_settings(make_settings(), revocations=AllowAll())


# -- introspection (RFC 7662) -----------------------------------------------------------------------


class Deny:
    """A RevocationCheck that answers one reason for every token."""

    def __init__(self, reason: Reason) -> None:
        self.reason = reason

    def denial(self, claims: Mapping[str, Any]) -> Reason | None:
        return self.reason


def test_introspect_an_active_token_gives_its_claims(
    make_engine: Callable[..., PolicyEngine],
) -> None:
    log = EventLog()
    engine = make_engine(recorder=log)
    token = engine.issue_token("log_agent_run", Scope.WRITE, subject="agent-7")
    answer = engine.introspect(token)
    assert (answer.active, answer.reason) == (True, Reason.OK)
    assert answer.claims == engine.codec.decode(token)
    body = answer.to_json()
    assert list(body) == [*engine.codec.decode(token), "active"]  # the claims first, as RFC 7662
    assert body["active"] is True
    assert body["sub"] == "agent-7"
    assert log.events == []  # introspection is no decision


@pytest.mark.parametrize("reason", [Reason.REVOKED, Reason.REVOCATION_STATE_STALE])
def test_introspect_a_denied_token_is_inactive_with_the_denial(
    make_engine: Callable[..., PolicyEngine], reason: Reason
) -> None:
    engine = make_engine(revocation=Deny(reason))
    answer = engine.introspect(engine.issue_token("log_agent_run", Scope.WRITE, subject="a"))
    assert (answer.active, answer.reason, answer.claims) == (False, reason, None)
    assert answer.to_json() == {"active": False}


@pytest.mark.parametrize(
    ("token", "reason"),
    [("not-a-token", Reason.MALFORMED), ("x" * 5000, Reason.MALFORMED)],
)
def test_introspect_a_rejected_token_is_inactive_with_the_codecs_reason(
    make_engine: Callable[..., PolicyEngine], token: str, reason: Reason
) -> None:
    revocation = AllowAll()
    engine = make_engine(revocation=revocation)
    answer = engine.introspect(token)
    assert (answer.active, answer.reason, answer.to_json()) == (False, reason, {"active": False})
    assert revocation.seen == []  # a token that does not decode is never looked up


def test_introspect_a_token_of_another_key_is_inactive(
    make_engine: Callable[..., PolicyEngine], make_settings: Callable[..., Settings]
) -> None:
    other = TokenCodec.from_settings(make_settings(jwt={"secret": "q" * 40}))
    token = other.issue(subject="a", tool_name="log_agent_run", scope="write")
    answer = make_engine().introspect(token)
    assert (answer.active, answer.reason) == (False, Reason.UNKNOWN_KEY)
