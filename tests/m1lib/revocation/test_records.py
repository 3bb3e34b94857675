"""Records, pages and cursors handed to callers: opaque cursors that stay in their own listing."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from m1lib.errors import InputError
from m1lib.revocation.records import (
    MAX_PAGE,
    AuditEntry,
    PurgeSummary,
    RevocationRule,
    RevokedToken,
    check_limit,
    decode_cursor,
    encode_cursor,
)
from tests.m1lib.revocation.conftest import (
    ManagerFactory,
    new_jti,
)


@pytest.mark.postgres
def test_revocation_list_rejects_a_foreign_cursor(make_manager: ManagerFactory) -> None:
    manager = make_manager()
    for _ in range(3):
        manager.revoke_token(new_jti(), "r", "alice")
    audit_cursor = manager.get_audit_log(limit=1).next_cursor
    assert audit_cursor is not None
    with pytest.raises(InputError, match=r"^cursor: .* is not a cursor of revocations"):
        manager.get_revocation_list(cursor=audit_cursor)
    with pytest.raises(InputError, match=r"^cursor: .* is not a cursor"):
        manager.get_revocation_list(cursor="%%%")
    with pytest.raises(InputError, match=r"^limit: 0 is out of range; allowed: 1-1000"):
        manager.get_revocation_list(limit=0)


def test_a_cursor_round_trips_within_its_own_listing_only() -> None:
    for last_id in (0, 1, 987_654_321):
        cursor = encode_cursor("revocations", last_id)
        assert "=" not in cursor  # opaque and URL-safe
        assert decode_cursor("revocations", cursor) == last_id
        with pytest.raises(InputError, match=r"^cursor: .* is not a cursor of audit"):
            decode_cursor("audit", cursor)
    for junk in ("", "%%%", encode_cursor("revocations", -1)[:-1] + "!", "\u00e9"):
        with pytest.raises(InputError, match=r"^cursor: "):
            decode_cursor("revocations", junk)
    with pytest.raises(InputError, match=r"is not a cursor of revocations"):
        decode_cursor("revocations", encode_cursor("revocations", -5))


def test_the_page_limit_is_1_to_max_page() -> None:
    check_limit(1)
    check_limit(MAX_PAGE)
    for limit in (0, -1, MAX_PAGE + 1):
        with pytest.raises(InputError, match=rf"^limit: {limit} is out of range"):
            check_limit(limit)


def test_records_are_built_from_any_row_and_serialise_in_camel_case() -> None:
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    token_row = SimpleNamespace(
        id="7",
        jti="j",
        tool_name=None,
        subject="s",
        reason="r",
        revoked_by="alice",
        revoked_at=at,
        expires_at=at,
    )
    token = RevokedToken.from_row(token_row, created=True)
    assert (token.id, token.created) == (7, True)
    assert RevokedToken.from_row(token_row).created is False
    assert token.to_json() == {
        "id": 7,
        "jti": "j",
        "toolName": None,
        "subject": "s",
        "reason": "r",
        "revokedBy": "alice",
        "revokedAt": at.isoformat(),
        "expiresAt": at.isoformat(),
    }
    rule = RevocationRule.from_row(
        SimpleNamespace(
            id=3,
            tool_name="t",
            subject=None,
            issued_before=at,
            reason="",
            created_by="a",
            created_at=at,
            expires_at=at,
        )
    )
    assert rule.to_json()["issuedBefore"] == at.isoformat()
    assert rule.to_json()["createdBy"] == "a"
    entry = AuditEntry.from_row(
        SimpleNamespace(
            id=1,
            at=at,
            action="purge",
            actor="m1:purge",
            jti=None,
            rule_id=None,
            tool_name=None,
            reason="",
            detail=None,
        )
    )
    assert (entry.rule_id, entry.detail) == (None, {})
    assert entry.to_json()["ruleId"] is None


def test_a_purge_summary_lists_one_row_per_kind_and_tool() -> None:
    summary = PurgeSummary(
        datetime.now(UTC),
        dry_run=True,
        tokens=3,
        rules=1,
        tokens_by_tool={"web_search": 2, "-": 1},
        rules_by_tool={"send_email": 1},
    )
    assert summary.rows() == [
        {"kind": "token", "tool": "-", "records": 1},
        {"kind": "token", "tool": "web_search", "records": 2},
        {"kind": "rule", "tool": "send_email", "records": 1},
    ]
