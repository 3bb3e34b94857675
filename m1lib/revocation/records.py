"""What the revocation API hands back: plain frozen records, pages and opaque cursors.

These are not the ORM rows of :mod:`m1lib.db.models` (which share two of the names): callers get
values that outlive any session. Each record's ``from_row`` is the one place a row (a Core row
or an ORM object of its table: anything with the column attributes) becomes that record; the
columns' type already hands back aware UTC datetimes.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

from m1lib.errors import InputError

__all__ = [
    "MAX_PAGE",
    "AuditEntry",
    "Page",
    "PurgeSummary",
    "RevocationRule",
    "RevokedToken",
    "check_limit",
    "decode_cursor",
    "encode_cursor",
]

T = TypeVar("T")
MAX_PAGE = 1000


@dataclass(frozen=True)
class RevokedToken:
    """One revoked jti as the database keeps it (the first record: later attempts only audit).

    ``created`` is True only in the answer of the ``revoke_token`` call that wrote the record, so
    a caller can tell a first revocation from a repeat; listings always say False.
    """

    id: int
    jti: str
    tool_name: str | None
    subject: str | None
    reason: str
    revoked_by: str
    revoked_at: datetime
    expires_at: datetime
    created: bool = False

    @classmethod
    def from_row(cls, row: Any, *, created: bool = False) -> RevokedToken:
        """A ``revoked_tokens`` row; ``created`` only for the call that inserted it."""
        return cls(
            id=int(row.id),
            jti=row.jti,
            tool_name=row.tool_name,
            subject=row.subject,
            reason=row.reason,
            revoked_by=row.revoked_by,
            revoked_at=row.revoked_at,
            expires_at=row.expires_at,
            created=created,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "jti": self.jti,
            "toolName": self.tool_name,
            "subject": self.subject,
            "reason": self.reason,
            "revokedBy": self.revoked_by,
            "revokedAt": self.revoked_at.isoformat(),
            "expiresAt": self.expires_at.isoformat(),
        }


@dataclass(frozen=True)
class RevocationRule:
    """A not-before rule: tokens for ``tool_name`` and/or ``subject`` issued before a time are denied.

    ``expires_at`` is when the rule stops mattering: every token it can match has expired by then.
    """

    id: int
    tool_name: str | None
    subject: str | None
    issued_before: datetime
    reason: str
    created_by: str
    created_at: datetime
    expires_at: datetime

    @classmethod
    def from_row(cls, row: Any) -> RevocationRule:
        """A ``revocation_rules`` row."""
        return cls(
            id=int(row.id),
            tool_name=row.tool_name,
            subject=row.subject,
            issued_before=row.issued_before,
            reason=row.reason,
            created_by=row.created_by,
            created_at=row.created_at,
            expires_at=row.expires_at,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "toolName": self.tool_name,
            "subject": self.subject,
            "issuedBefore": self.issued_before.isoformat(),
            "reason": self.reason,
            "createdBy": self.created_by,
            "createdAt": self.created_at.isoformat(),
            "expiresAt": self.expires_at.isoformat(),
        }


@dataclass(frozen=True)
class AuditEntry:
    """One revocation action (revoke, revoke_repeat, revoke_all, purge) and who did it."""

    id: int
    at: datetime
    action: str
    actor: str
    jti: str | None
    rule_id: int | None
    tool_name: str | None
    reason: str
    detail: dict[str, Any]

    @classmethod
    def from_row(cls, row: Any) -> AuditEntry:
        """A ``revocation_audit`` row."""
        return cls(
            id=int(row.id),
            at=row.at,
            action=row.action,
            actor=row.actor,
            jti=row.jti,
            rule_id=None if row.rule_id is None else int(row.rule_id),
            tool_name=row.tool_name,
            reason=row.reason,
            detail=dict(row.detail or {}),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": self.at.isoformat(),
            "action": self.action,
            "actor": self.actor,
            "jti": self.jti,
            "ruleId": self.rule_id,
            "toolName": self.tool_name,
            "reason": self.reason,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class Page(Generic[T]):
    """A slice of a listing, newest first; pass ``next_cursor`` back for the next slice.

    >>> page = manager.get_revocation_list(limit=100)
    >>> while page.next_cursor:
    ...     page = manager.get_revocation_list(cursor=page.next_cursor, limit=100)
    """

    items: list[T]
    next_cursor: str | None = None


@dataclass(frozen=True)
class PurgeSummary:
    """What a purge deleted (or, on a dry run, would delete), with the per-tool breakdown."""

    older_than: datetime
    dry_run: bool
    tokens: int
    rules: int
    tokens_by_tool: dict[str, int] = field(default_factory=dict)
    rules_by_tool: dict[str, int] = field(default_factory=dict)

    def rows(self) -> list[dict[str, Any]]:
        """One row per kind and tool, for a table artifact or a terminal."""
        return [
            {"kind": kind, "tool": tool, "records": count}
            for kind, counts in (("token", self.tokens_by_tool), ("rule", self.rules_by_tool))
            for tool, count in sorted(counts.items())
        ]


def encode_cursor(kind: str, last_id: int) -> str:
    """An opaque cursor; the kind keeps one listing's cursor out of another."""
    return base64.urlsafe_b64encode(f"{kind}:{last_id}".encode()).decode().rstrip("=")


def decode_cursor(kind: str, cursor: str) -> int:
    """The id a cursor continues after; a cursor that is not from this listing is an InputError."""
    allowed = [f"the nextCursor of a previous page of {kind}"]
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        text = base64.urlsafe_b64decode(padded.encode("ascii")).decode("ascii")
        found_kind, _, number = text.partition(":")
        last_id = int(number)
    except (ValueError, binascii.Error, UnicodeError):
        raise InputError("cursor", f"{cursor[:80]!r} is not a cursor", allowed) from None
    if found_kind != kind or last_id < 0:
        raise InputError("cursor", f"{cursor[:80]!r} is not a cursor of {kind}", allowed)
    return last_id


def check_limit(limit: int) -> None:
    if not 1 <= limit <= MAX_PAGE:
        raise InputError("limit", f"{limit} is out of range", [f"1-{MAX_PAGE}"])
