"""RevocationManager: the seed's scenarios through revoke and verify, input checks, readiness."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from m1lib.errors import InputError
from m1lib.policy import Reason, Scope
from m1lib.revocation import RevocationManager
from m1lib.settings import Settings
from tests.m1lib.revocation.conftest import (
    ManagerFactory,
    claims,
    engine_for,
    loaded,
    new_jti,
)

pytestmark = pytest.mark.postgres


def test_revoke_then_check(make_manager: ManagerFactory) -> None:
    manager = loaded(make_manager())
    jti = new_jti()
    record = manager.revoke_token(jti, "leaked in a log", "alice", tool_name="web_search")
    assert record.created
    assert (record.jti, record.tool_name, record.revoked_by) == (jti, "web_search", "alice")
    assert manager.is_revoked(jti)
    assert manager.is_denied(claims(jti))
    assert manager.denial(claims(jti)) is Reason.REVOKED


def test_unknown_jti_is_not_revoked(make_manager: ManagerFactory) -> None:
    manager = loaded(make_manager())
    manager.revoke_token(new_jti(), "other", "alice")
    unknown = claims()
    assert not manager.is_revoked(unknown["jti"])
    assert not manager.is_denied(unknown)
    assert manager.denial(unknown) is None
    assert manager.get_record(unknown["jti"]) is None


def test_credential_compromise_revokes_every_token_of_one_actor(
    make_manager: ManagerFactory,
) -> None:
    manager = loaded(make_manager())
    engine = engine_for(manager)
    calls = [("log_agent_run", Scope.WRITE), ("request_approval", Scope.EXECUTE)] * 2
    stolen = [
        (engine.issue_token(tool, scope, subject="agent-1"), tool, scope) for tool, scope in calls
    ]
    unrelated = engine.issue_token("log_agent_run", Scope.WRITE, subject="agent-2")
    for token, _, _ in stolen:
        jti = engine.codec.decode(token)["jti"]
        manager.revoke_token(jti, "credential compromise", "security-bot")
    for token, tool, scope in stolen:
        decision = engine.verify(token, tool, scope)
        assert (decision.allowed, decision.reason) == (False, Reason.REVOKED)
    assert engine.verify(unrelated, "log_agent_run", Scope.WRITE).allowed
    actors = {entry.actor for entry in manager.get_audit_log().items}
    assert actors == {"security-bot"}


def test_permission_withdrawal_for_one_tool_through_verify(make_manager: ManagerFactory) -> None:
    manager = loaded(make_manager())
    engine = engine_for(manager)
    write = engine.issue_token("log_agent_run", Scope.WRITE, subject="agent-1")
    other = engine.issue_token("request_approval", Scope.EXECUTE, subject="agent-1")
    manager.revoke_all(
        tool_name="log_agent_run",
        issued_before=datetime.now(UTC),
        reason="write access withdrawn",
        revoked_by="alice",
    )
    assert engine.verify(write, "log_agent_run", Scope.WRITE).reason is Reason.REVOKED
    assert engine.verify(other, "request_approval", Scope.EXECUTE).allowed


def test_permission_withdrawal_rule_matches_by_issue_time(make_manager: ManagerFactory) -> None:
    manager = loaded(make_manager())
    before = int(time.time()) - 5
    rule = manager.revoke_all(
        tool_name="send_email",
        issued_before=datetime.now(UTC),
        reason="email tool withdrawn",
        revoked_by="alice",
    )
    assert rule.tool_name == "send_email"
    assert rule.expires_at > rule.issued_before
    assert manager.denial(claims(tool="send_email", iat=before)) is Reason.REVOKED
    assert manager.is_denied(claims(tool="send_email", sub="someone-else", iat=before))
    assert manager.denial(claims(tool="web_search", iat=before)) is None
    assert manager.denial(claims(tool="send_email", iat=time.time() + 5)) is None
    assert not manager.is_revoked(claims(tool="send_email")["jti"])


def test_token_rotation_old_revoked_new_accepted(make_manager: ManagerFactory) -> None:
    manager = loaded(make_manager())
    engine = engine_for(manager)
    old = engine.issue_token("log_agent_run", Scope.WRITE, subject="agent-1")
    manager.revoke_token(
        engine.codec.decode(old)["jti"], "rotated", "alice", tool_name="log_agent_run"
    )
    new = engine.issue_token("log_agent_run", Scope.WRITE, subject="agent-1")
    assert engine.verify(old, "log_agent_run", Scope.WRITE).reason is Reason.REVOKED
    assert engine.verify(new, "log_agent_run", Scope.WRITE, subject="agent-1").allowed


def test_purge_refuses_a_cutoff_in_the_future(make_manager: ManagerFactory) -> None:
    manager = make_manager()
    with pytest.raises(InputError, match=r"^older_than: .* is in the future"):
        manager.purge(datetime.now(UTC) + timedelta(hours=1))


def test_revoke_checks_its_input(make_manager: ManagerFactory) -> None:
    manager = make_manager()
    with pytest.raises(InputError, match=r"^jti: 0 characters is out of range; allowed: 1-64"):
        manager.revoke_token("", "r", "alice")
    with pytest.raises(InputError, match=r"^jti: 65 characters"):
        manager.revoke_token("x" * 65, "r", "alice")
    with pytest.raises(InputError, match=r"^revoked_by:"):
        manager.revoke_token(new_jti(), "r", " ")
    with pytest.raises(InputError, match=r"^reason: 501 characters"):
        manager.revoke_token(new_jti(), "r" * 501, "alice")
    with pytest.raises(InputError, match=r"^expires_at: .* has no time zone"):
        manager.revoke_token(new_jti(), "r", "alice", expires_at=datetime(2030, 1, 1))
    with pytest.raises(InputError, match=r"^tool_name: a rule needs a tool, a subject or both"):
        manager.revoke_all(issued_before=datetime.now(UTC), reason="r", revoked_by="alice")
    assert manager.get_revocation_list().items == []


@pytest.mark.parametrize(
    ("field", "call"),
    [
        ("jti", lambda m: m.revoke_token("a\x00b", "r", "alice")),
        ("reason", lambda m: m.revoke_token(new_jti(), "why\x00", "alice")),
        ("subject", lambda m: m.revoke_token(new_jti(), "r", "alice", subject="s\x00")),
        ("tool_name", lambda m: m.revoke_token(new_jti(), "r", "alice", tool_name="t\ud800")),
        ("jti", lambda m: m.get_record("a\x00b")),
        (
            "subject",
            lambda m: m.revoke_all(
                subject="a\x00", issued_before=datetime.now(UTC), reason="", revoked_by="alice"
            ),
        ),
    ],
)
def test_text_with_nul_or_surrogate_is_refused_before_the_database(
    make_manager: ManagerFactory, field: str, call: Callable[[RevocationManager], object]
) -> None:
    manager = make_manager()
    with pytest.raises(InputError, match=rf"^{field}: holds a (NUL character|lone surrogate)"):
        call(manager)
    assert manager.get_revocation_list().items == []
    assert manager.get_audit_log().items == []


def test_reason_may_hold_line_breaks(make_manager: ManagerFactory) -> None:
    record = make_manager().revoke_token(new_jti(), "leaked\n\tin a log", "alice")
    assert record.reason == "leaked\n\tin a log"


def test_default_expiry_covers_the_longest_token_lifetime(make_manager: ManagerFactory) -> None:
    manager = make_manager()
    record = manager.revoke_token(new_jti(), "r", "alice")
    lifetime = manager.settings.token.ttl_s + manager.settings.token.leeway_s
    assert record.expires_at - record.revoked_at == timedelta(seconds=lifetime)


def test_denial_tolerates_odd_claim_types(make_manager: ManagerFactory) -> None:
    manager = loaded(make_manager())
    manager.revoke_all(
        tool_name="send_email", issued_before=datetime.now(UTC), reason="r", revoked_by="a"
    )
    odd: dict[str, Any] = {"jti": ["not", "hashable"], "toolName": {"x": 1}, "sub": 5, "iat": 1}
    assert manager.denial(odd) is None
    assert manager.denial({}) is None


def test_not_ready_and_denying_until_the_first_load(make_manager: ManagerFactory) -> None:
    manager = make_manager()
    assert not manager.ready
    assert manager.sync_age_s is None
    assert manager.denial(claims()) is Reason.REVOCATION_STATE_STALE
    manager.load()
    assert manager.ready
    assert manager.denial(claims()) is None
    age = manager.sync_age_s
    assert age is not None
    assert age >= 0


def test_fail_open_accepts_while_stale_but_still_denies_known_revocations(
    make_manager: ManagerFactory,
) -> None:
    manager = make_manager(fail_open=True)
    assert manager.denial(claims()) is None  # nothing loaded, and the operator chose availability
    assert not manager.ready  # ...but not ready before the first load
    jti = new_jti()
    manager.revoke_token(jti, "r", "alice")
    assert manager.denial(claims(jti)) is Reason.REVOKED


def test_disabled_revocation_allows_everything_and_says_so(
    make_manager: ManagerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    manager = make_manager(enabled=False)
    with caplog.at_level(logging.WARNING, logger="m1.revocation"):
        manager.start()
    assert "M1_REVOCATION_ENABLED=false" in caplog.text
    jti = new_jti()
    manager.revoke_token(jti, "still recorded", "alice")
    assert manager.get_record(jti) is not None
    assert manager.denial(claims(jti)) is None
    assert manager.ready
    assert not manager.status().running


def test_staleness_bound_must_exceed_the_resync_period(
    make_settings: Callable[..., Settings],
) -> None:
    with pytest.raises(ValueError, match=r"M1_REVOCATION_MAX_STALENESS_S .* must be greater"):
        make_settings(revocation={"resync_s": 5, "max_staleness_s": 5})
