"""The database side of revocation: the truth every replica's state is rebuilt from.

Each public method is one short transaction. Times written here come from the database's clock
(``now()`` on PostgreSQL: the transaction's start), and readers compute their overlap windows
from the same clock, so replicas on machines with skewed clocks still agree on what is "recent".
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Table, delete, exc, func, insert, or_, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from m1lib.db import models
from m1lib.db.types import UtcDateTime
from m1lib.db.upsert import upsert
from m1lib.epoch import to_us
from m1lib.errors import DatabaseUnavailable
from m1lib.revocation.records import (
    AuditEntry,
    Page,
    PurgeSummary,
    RevocationRule,
    RevokedToken,
    check_limit,
    decode_cursor,
    encode_cursor,
)
from m1lib.revocation.state import RuleEntry, jti_hash

if TYPE_CHECKING:
    from m1lib.db.session import Database

__all__ = ["Changes", "Digest", "RevocationStore", "Snapshot"]

TOKENS = cast(Table, models.RevokedToken.__table__)
RULES = cast(Table, models.RevocationRule.__table__)
AUDIT = cast(Table, models.RevocationAudit.__table__)
_NO_TOOL = "(any tool)"


@dataclass(frozen=True)
class Snapshot:
    """Everything revoked, as one full load reads it; ``db_now`` is when the read began."""

    db_now: datetime
    jtis: dict[str, int]  # jti -> revoked_at (µs)
    rules: dict[int, RuleEntry]
    max_token_id: int
    max_rule_id: int


@dataclass(frozen=True)
class Changes:
    """Rows of an incremental read: past the cursors, or inside the overlap window."""

    db_now: datetime
    jtis: list[tuple[str, int]]
    rules: list[tuple[int, RuleEntry]]
    max_token_id: int
    max_rule_id: int


@dataclass(frozen=True)
class Digest:
    """What a reconciliation compares: written before ``bound``, by the database's clock."""

    bound: datetime
    token_count: int
    token_hash: int
    rule_count: int
    rule_id_sum: int


class RevocationStore:
    """SQL for revocations, rules and their audit; every driver error leaves as an M1 error."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._postgres = db.engine.dialect.name == "postgresql"

    @contextmanager
    def _transaction(self) -> Iterator[Session]:
        """``db.transaction`` names connection failures; a refused statement is named here."""
        try:
            with self.db.transaction() as session:
                yield session
        except exc.DBAPIError as error:
            raise DatabaseUnavailable(
                f"the database refused a revocation statement ({type(error.orig).__name__}); "
                "is the schema current? (m1 db upgrade)",
                retry_after_s=5,
            ) from error

    def _now(self, session: Session) -> datetime:
        if self._postgres:
            return session.execute(select(func.now(type_=UtcDateTime()))).scalar_one()
        return datetime.now(UTC)

    # -- writes -------------------------------------------------------------------------------

    def revoke(
        self,
        *,
        jti: str,
        reason: str,
        actor: str,
        tool_name: str | None,
        subject: str | None,
        expires_at: datetime | None,
        lifetime: timedelta,
    ) -> RevokedToken:
        """Insert the record unless the jti is known, and audit the attempt, in one transaction."""
        with self._transaction() as session:
            now = self._now(session)
            values: dict[str, Any] = {
                "jti": jti,
                "tool_name": tool_name,
                "subject": subject,
                "reason": reason,
                "revoked_by": actor,
                "revoked_at": now,
                "expires_at": expires_at if expires_at is not None else now + lifetime,
            }
            # A concurrent first writer wins (do nothing on conflict); RETURNING says who won.
            statement = upsert(self.db.engine.dialect, TOKENS, values, ["jti"])
            row = session.execute(statement.returning(*TOKENS.c)).one_or_none()
            if row is None:
                row = session.execute(select(TOKENS).where(TOKENS.c.jti == jti)).one()
                record = RevokedToken.from_row(row)
                action = "revoke_repeat"
                detail: dict[str, Any] = {
                    "firstRevokedBy": record.revoked_by,
                    "firstRevokedAt": record.revoked_at.isoformat(),
                }
            else:
                record = RevokedToken.from_row(row, created=True)
                action = "revoke"
                detail = {"subject": subject, "expiresAt": record.expires_at.isoformat()}
            session.execute(
                insert(AUDIT).values(
                    at=now,
                    action=action,
                    actor=actor,
                    jti=jti,
                    rule_id=None,
                    tool_name=tool_name if tool_name is not None else record.tool_name,
                    reason=reason,
                    detail=detail,
                )
            )
        return record

    def add_rule(
        self,
        *,
        tool_name: str | None,
        subject: str | None,
        issued_before: datetime,
        reason: str,
        actor: str,
        lifetime: timedelta,
    ) -> RevocationRule:
        """Store a not-before rule and its audit; it matters until ``issued_before + lifetime``."""
        with self._transaction() as session:
            now = self._now(session)
            values: dict[str, Any] = {
                "tool_name": tool_name,
                "subject": subject,
                "issued_before": issued_before,
                "reason": reason,
                "created_by": actor,
                "created_at": now,
                "expires_at": issued_before + lifetime,
            }
            row = session.execute(insert(RULES).values(values).returning(*RULES.c)).one()
            rule = RevocationRule.from_row(row)
            session.execute(
                insert(AUDIT).values(
                    at=now,
                    action="revoke_all",
                    actor=actor,
                    jti=None,
                    rule_id=rule.id,
                    tool_name=tool_name,
                    reason=reason,
                    detail={"subject": subject, "issuedBefore": rule.issued_before.isoformat()},
                )
            )
        return rule

    def purge(self, older_than: datetime, *, actor: str, dry_run: bool) -> PurgeSummary:
        """Delete token records and rules that expired before ``older_than`` (and audit it)."""
        cutoff = older_than.astimezone(UTC)  # aware (the manager checks); said in UTC
        with self._transaction() as session:
            now = self._now(session)
            tokens_by_tool = _count_by_tool(session, TOKENS, cutoff)
            rules_by_tool = _count_by_tool(session, RULES, cutoff)
            tokens, rules = sum(tokens_by_tool.values()), sum(rules_by_tool.values())
            if not dry_run:
                tokens = _rowcount(
                    session.execute(delete(TOKENS).where(TOKENS.c.expires_at < cutoff))
                )
                rules = _rowcount(session.execute(delete(RULES).where(RULES.c.expires_at < cutoff)))
                session.execute(
                    insert(AUDIT).values(
                        at=now,
                        action="purge",
                        actor=actor,
                        jti=None,
                        rule_id=None,
                        tool_name=None,
                        reason=f"expired before {cutoff.isoformat()}",
                        detail={
                            "olderThan": cutoff.isoformat(),
                            "tokens": tokens,
                            "rules": rules,
                            "tokensByTool": tokens_by_tool,
                            "rulesByTool": rules_by_tool,
                        },
                    )
                )
        return PurgeSummary(
            older_than=cutoff,
            dry_run=dry_run,
            tokens=tokens,
            rules=rules,
            tokens_by_tool=tokens_by_tool,
            rules_by_tool=rules_by_tool,
        )

    # -- reads for the in-memory state --------------------------------------------------------

    def snapshot(self) -> Snapshot:
        """Every revoked jti and every rule (one full load)."""
        with self._transaction() as session:
            now = self._now(session)
            token_rows = session.execute(select(TOKENS.c.id, TOKENS.c.jti, TOKENS.c.revoked_at))
            jtis: dict[str, int] = {}
            max_token_id = 0
            for token_id, jti, revoked_at in token_rows:
                jtis[jti] = to_us(revoked_at)
                max_token_id = max(max_token_id, token_id)
            rules = _rule_entries(session.execute(select(*_RULE_COLUMNS)).all())
        return Snapshot(
            db_now=now,
            jtis=jtis,
            rules=dict(rules),
            max_token_id=max_token_id,
            max_rule_id=max((rule_id for rule_id, _ in rules), default=0),
        )

    def changes(self, *, after_token_id: int, after_rule_id: int, since: datetime) -> Changes:
        """Rows past the id cursors plus every row written at or after ``since``.

        Ids and timestamps are handed out before commit, so a row can become visible after rows
        with higher ids were read: re-reading the window behind the cursor catches it, as long
        as its transaction took less than the window to commit.
        """
        with self._transaction() as session:
            now = self._now(session)
            token_rows = session.execute(
                select(TOKENS.c.id, TOKENS.c.jti, TOKENS.c.revoked_at).where(
                    or_(TOKENS.c.id > after_token_id, TOKENS.c.revoked_at >= since)
                )
            ).all()
            rule_rows = session.execute(
                select(*_RULE_COLUMNS).where(
                    or_(RULES.c.id > after_rule_id, RULES.c.created_at >= since)
                )
            ).all()
        rules = _rule_entries(rule_rows)
        return Changes(
            db_now=now,
            jtis=[(row.jti, to_us(row.revoked_at)) for row in token_rows],
            rules=rules,
            max_token_id=max((int(row.id) for row in token_rows), default=after_token_id),
            max_rule_id=max((rule_id for rule_id, _ in rules), default=after_rule_id),
        )

    def digest(self, window: timedelta) -> Digest:
        """Counts and checksums of what was written before ``now - window``.

        PostgreSQL sums the jti hashes itself, so a reconciliation moves a few numbers, not every
        jti; SQLite (one replica, small) has no MD5, so its jtis are hashed here. Rules are few
        and never change once written: their ids' count and sum identify the set.
        """
        with self._transaction() as session:
            bound = self._now(session) - window
            older = TOKENS.c.revoked_at < bound
            rule_count, rule_sum = session.execute(
                select(func.count(), func.coalesce(func.sum(RULES.c.id), 0)).where(
                    RULES.c.created_at < bound
                )
            ).one()
            if self._postgres:
                hashed = func.cast(
                    func.cast("x" + func.substr(func.md5(TOKENS.c.jti), 1, 15), postgresql.BIT(60)),
                    postgresql.BIGINT,
                )
                count, total = session.execute(
                    select(func.count(), func.coalesce(func.sum(hashed), 0)).where(older)
                ).one()
            else:
                jtis = session.execute(select(TOKENS.c.jti).where(older)).scalars().all()
                count, total = len(jtis), sum(jti_hash(jti) for jti in jtis)
        return Digest(bound, int(count), int(total), int(rule_count), int(rule_sum))

    # -- reads for people ---------------------------------------------------------------------

    def token(self, jti: str) -> RevokedToken | None:
        with self._transaction() as session:
            row = session.execute(select(TOKENS).where(TOKENS.c.jti == jti)).one_or_none()
        return None if row is None else RevokedToken.from_row(row)

    def tokens_page(
        self, tool_name: str | None, cursor: str | None, limit: int
    ) -> Page[RevokedToken]:
        check_limit(limit)
        query = select(TOKENS).order_by(TOKENS.c.id.desc()).limit(limit + 1)
        if tool_name is not None:
            query = query.where(TOKENS.c.tool_name == tool_name)
        if cursor is not None:
            query = query.where(TOKENS.c.id < decode_cursor("revocations", cursor))
        with self._transaction() as session:
            rows = session.execute(query).all()
        items = [RevokedToken.from_row(row) for row in rows[:limit]]
        more = len(rows) > limit
        return Page(items, encode_cursor("revocations", items[-1].id) if more else None)

    def rules(self, *, include_expired: bool = False) -> list[RevocationRule]:
        query = select(RULES).order_by(RULES.c.id.desc())
        with self._transaction() as session:
            if not include_expired:
                query = query.where(RULES.c.expires_at >= self._now(session))
            rows = session.execute(query).all()
        return [RevocationRule.from_row(row) for row in rows]

    def audit_page(self, cursor: str | None, limit: int) -> Page[AuditEntry]:
        check_limit(limit)
        query = select(AUDIT).order_by(AUDIT.c.id.desc()).limit(limit + 1)
        if cursor is not None:
            query = query.where(AUDIT.c.id < decode_cursor("audit", cursor))
        with self._transaction() as session:
            rows = session.execute(query).all()
        items = [AuditEntry.from_row(row) for row in rows[:limit]]
        more = len(rows) > limit
        return Page(items, encode_cursor("audit", items[-1].id) if more else None)


_RULE_COLUMNS = (
    RULES.c.id,
    RULES.c.tool_name,
    RULES.c.subject,
    RULES.c.issued_before,
    RULES.c.created_at,
)


def _rule_entries(rows: Sequence[Any]) -> list[tuple[int, RuleEntry]]:
    return [(int(row.id), RuleEntry.from_rule(row)) for row in rows]


def _count_by_tool(session: Session, table: Table, cutoff: datetime) -> dict[str, int]:
    rows = session.execute(
        select(table.c.tool_name, func.count())
        .where(table.c.expires_at < cutoff)
        .group_by(table.c.tool_name)
    ).all()
    return {tool or _NO_TOOL: int(count) for tool, count in rows}


def _rowcount(result: Any) -> int:
    return int(result.rowcount)
