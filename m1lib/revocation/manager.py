"""RevocationManager: revoke (database first), check (memory only), and stay in step.

The database is the truth: ``revoke_token`` and ``revoke_all`` return only after their row and its
audit are committed together, then add to this process's state and announce it on Redis. Every
check (``is_revoked``, ``is_denied``, ``denial``) reads only the in-memory state, so a verify never
waits on I/O; :mod:`m1lib.revocation.sync` keeps that state current and says how fresh it is.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import redis

from m1lib.db.session import Database
from m1lib.epoch import to_us
from m1lib.errors import InputError
from m1lib.redis_conn import make_redis
from m1lib.revocation.records import (
    AuditEntry,
    Page,
    PurgeSummary,
    RevocationRule,
    RevokedToken,
)
from m1lib.revocation.state import RevocationState, RuleEntry
from m1lib.revocation.store import RevocationStore
from m1lib.revocation.sync import Synchronizer, encode_rule, encode_token, revocation_channel
from m1lib.settings import Settings, get_settings
from m1lib.text import ACTOR_MAX, JTI_MAX, REASON_MAX, SUBJECT_MAX, TOOL_MAX, check_text
from m1lib.tokens import Reason

__all__ = ["RevocationManager", "RevocationStatus", "max_token_lifetime"]

logger = logging.getLogger("m1.revocation")

_monotonic = time.monotonic


def max_token_lifetime(settings: Settings) -> timedelta:
    """How long any token can be accepted after it was issued: its lifetime plus the leeway."""
    return timedelta(seconds=settings.token.ttl_s + settings.token.leeway_s)


@dataclass(frozen=True)
class RevocationStatus:
    """How this process's revocation state stands, for readiness checks, heartbeats and ``m1``."""

    enabled: bool
    loaded: bool
    fresh: bool
    ready: bool
    fail_open: bool
    sync_age_s: float | None
    revoked_jtis: int
    rules: int
    subscribed: bool
    running: bool

    def detail(self) -> str:
        if not self.enabled:
            return "revocation checks are disabled (M1_REVOCATION_ENABLED=false)"
        if not self.loaded:
            return "first load of the revocation state not done yet"
        age = f"{self.sync_age_s:.1f} s" if self.sync_age_s is not None else "unknown"
        state = "fresh" if self.fresh else "STALE" + (" (fail-open)" if self.fail_open else "")
        return f"{state}: last resync {age} ago; {self.revoked_jtis} jtis, {self.rules} rules"


class RevocationManager:
    """Revoked jtis and not-before rules, checked in memory and kept in step across replicas.

    Use one per process. The API replica calls ``start()`` (a background first load, then resync,
    reconciliation and a Redis subscriber) and ``close()``; until the first load is done the
    manager is not ``ready`` and ``denial`` answers ``revocation_state_stale``. A script that only
    revokes or lists needs neither.

    >>> manager = RevocationManager.from_settings()
    >>> manager.start()
    >>> manager.revoke_token(jti, "credential leaked", "alice", tool_name="web_search")
    >>> manager.denial(claims)  # Reason.REVOKED
    >>> manager.close()
    """

    def __init__(
        self,
        *,
        settings: Settings,
        db: Database,
        publisher: redis.Redis | None = None,
    ) -> None:
        config = settings.revocation
        self.settings = settings
        self.db = db
        self._owns_db = False
        self._owns_publisher = publisher is None
        self._publisher = make_redis(settings) if publisher is None else publisher
        self._channel = revocation_channel(settings)
        self._enabled = config.enabled
        self._fail_open = config.fail_open
        self._lifetime = max_token_lifetime(settings)
        # Bound once: the hot path returns these without a global or attribute lookup chain.
        self._revoked = Reason.REVOKED
        self._stale = Reason.REVOCATION_STATE_STALE
        self._state = RevocationState(max_staleness_s=config.max_staleness_s)
        self._store = RevocationStore(db)
        self._sync = Synchronizer(settings=settings, store=self._store, state=self._state)

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> RevocationManager:
        """A manager with its own database engine and Redis client (closed by ``close``)."""
        settings = settings or get_settings()
        manager = cls(settings=settings, db=Database(settings))
        manager._owns_db = True
        return manager

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the first load and the sync threads; returns at once (see ``ready``)."""
        if not self._enabled:
            logger.warning(
                "M1_REVOCATION_ENABLED=false: revocation checks are OFF; revoked tokens are "
                "accepted until their expiry. Revocations are still recorded."
            )
            return
        if self._fail_open:
            logger.warning(
                "M1_REVOCATION_FAIL_OPEN=true: tokens are accepted when the revocation state "
                "is stale (do not use in production)"
            )
        self._sync.start()

    def close(self) -> None:
        """Stop the threads and release what this manager opened; safe to call twice."""
        self._sync.stop()
        if self._owns_publisher and self._publisher is not None:
            self._publisher.close()
        if self._owns_db:
            self.db.dispose()

    def load(self) -> None:
        """Bring the state up to date now, on this thread: a full load the first time, then a
        resync. For processes without the threads (scripts, tests); raises DatabaseUnavailable."""
        self._sync.sync_once()

    def reconcile(self) -> bool:
        """Run the count-and-hash reconciliation now; True when it had to reload."""
        return self._sync.reconcile_now()

    def full_resync(self) -> tuple[int, int]:
        """Reload everything from the database now, on this thread: (jtis dropped, jtis added).
        Raises DatabaseUnavailable; the state stays as it was then."""
        return self._sync.full_reload()

    def request_resync(self) -> None:
        """Ask the sync thread to resync now (a control command's handler, say)."""
        self._sync.wake()

    @property
    def ready(self) -> bool:
        """Can this process decide correctly: first load done and the state fresh.

        With fail-open configured a stale (but loaded) state still counts as ready, since the
        operator chose availability; revocation disabled is always ready.
        """
        if not self._enabled:
            return True
        state = self._state
        return state.loaded and (self._fail_open or _monotonic() <= state.fresh_until)

    @property
    def sync_age_s(self) -> float | None:
        """Seconds since the last successful database sync; None before the first load."""
        return self._state.sync_age_s()

    def status(self) -> RevocationStatus:
        state = self._state
        return RevocationStatus(
            enabled=self._enabled,
            loaded=state.loaded,
            fresh=state.is_fresh(),
            ready=self.ready,
            fail_open=self._fail_open,
            sync_age_s=state.sync_age_s(),
            revoked_jtis=len(state.jtis),
            rules=state.rule_count,
            subscribed=self._sync.subscribed,
            running=self._sync.running,
        )

    # -- checks: the hot path, memory only ------------------------------------------------------

    def is_revoked(self, jti: str) -> bool:
        """Whether this jti is in the revocation set (rules and freshness are not consulted)."""
        return jti in self._state.jtis

    def is_denied(self, claims: Mapping[str, Any]) -> bool:
        """Whether the claims' jti is revoked or a not-before rule matches them."""
        state = self._state
        jti = claims.get("jti")
        return (jti.__class__ is str and jti in state.jtis) or state.denied_by_rule(claims)

    def denial(self, claims: Mapping[str, Any]) -> Reason | None:
        """Why the policy engine must deny these (verified) claims, or None to allow.

        ``revoked`` for a revoked jti or a matching rule; ``revocation_state_stale`` when this
        process cannot vouch for its state (first load not done, or older than the staleness
        bound) unless fail-open is configured. Disabled revocation always allows.
        """
        if not self._enabled:
            return None
        state = self._state
        jti = claims.get("jti")
        if jti.__class__ is str and jti in state.jtis:
            return self._revoked
        if state.rule_index and state.denied_by_rule(claims):
            return self._revoked
        if _monotonic() > state.fresh_until and not self._fail_open:
            return self._stale
        return None

    # -- writes: database first, then memory, then the announcement ------------------------------

    def revoke_token(
        self,
        jti: str,
        reason: str,
        revoked_by: str,
        *,
        tool_name: str | None = None,
        subject: str | None = None,
        expires_at: datetime | None = None,
    ) -> RevokedToken:
        """Revoke one token by jti; returns after the commit. Idempotent: a second call keeps the
        first record (returned, ``created`` False) and is audited too.

        ``expires_at`` is when the record may be purged: the token's ``exp`` plus leeway when
        known, else now plus the maximum token lifetime and leeway. Raises DatabaseUnavailable
        when the database cannot commit; then nothing is recorded, applied or announced.
        """
        check_text("jti", jti, JTI_MAX, required=True)
        check_text("reason", reason, REASON_MAX, prose=True)
        check_text("revoked_by", revoked_by, ACTOR_MAX, required=True)
        check_text("tool_name", tool_name, TOOL_MAX, required=True, optional=True)
        check_text("subject", subject, SUBJECT_MAX, required=True, optional=True)
        if expires_at is not None:
            _check_aware("expires_at", expires_at)
        record = self._store.revoke(
            jti=jti,
            reason=reason,
            actor=revoked_by,
            tool_name=tool_name,
            subject=subject,
            expires_at=expires_at,
            lifetime=self._lifetime,
        )
        revoked_at_us = to_us(record.revoked_at)
        self._state.add_jti(jti, revoked_at_us)
        self._publish(encode_token(jti, revoked_at_us))
        log = logger.info if record.created else logger.debug
        log("revoked jti %s (tool %s) by %s: %s", jti, record.tool_name, revoked_by, reason)
        return record

    def revoke_all(
        self,
        *,
        tool_name: str | None = None,
        subject: str | None = None,
        issued_before: datetime,
        reason: str,
        revoked_by: str,
    ) -> RevocationRule:
        """Deny every token for ``tool_name`` and/or ``subject`` issued before ``issued_before``.

        Tokens are compared by their ``iat`` (whole seconds as issued), so a token issued in the
        same second just after the rule may be denied too: re-issue after the rule's second.
        """
        check_text("tool_name", tool_name, TOOL_MAX, required=True, optional=True)
        check_text("subject", subject, SUBJECT_MAX, required=True, optional=True)
        check_text("reason", reason, REASON_MAX, prose=True)
        check_text("revoked_by", revoked_by, ACTOR_MAX, required=True)
        _check_aware("issued_before", issued_before)
        if tool_name is None and subject is None:
            raise InputError(
                "tool_name",
                "a rule needs a tool, a subject or both",
                ["tool_name", "subject", "both"],
            )
        rule = self._store.add_rule(
            tool_name=tool_name,
            subject=subject,
            issued_before=issued_before,
            reason=reason,
            actor=revoked_by,
            lifetime=self._lifetime,
        )
        entry = RuleEntry.from_rule(rule)
        self._state.add_rules([(rule.id, entry)])
        self._publish(encode_rule(rule.id, entry))
        logger.info(
            "revoked every token for tool %s, subject %s issued before %s, by %s: %s",
            tool_name or "(any)",
            subject or "(any)",
            rule.issued_before.isoformat(),
            revoked_by,
            reason,
        )
        return rule

    def _publish(self, payload: str) -> None:
        """Announce a committed change; a lost announcement costs one resync period, no more."""
        if self._publisher is None:
            return
        try:
            self._publisher.publish(self._channel, payload)
        except (redis.RedisError, OSError) as error:
            logger.warning("revocation not announced on Redis (replicas will resync): %s", error)

    # -- reads from the database ------------------------------------------------------------------

    def get_revocation_list(
        self, tool_name: str | None = None, *, cursor: str | None = None, limit: int = 100
    ) -> Page[RevokedToken]:
        """Revoked tokens, newest first, optionally of one tool."""
        return self._store.tokens_page(tool_name, cursor, limit)

    def get_audit_log(self, *, cursor: str | None = None, limit: int = 100) -> Page[AuditEntry]:
        """Every revocation action, newest first."""
        return self._store.audit_page(cursor, limit)

    def get_rules(self, *, include_expired: bool = False) -> list[RevocationRule]:
        """Not-before rules, newest first; by default only those that can still match a token."""
        return self._store.rules(include_expired=include_expired)

    def get_record(self, jti: str) -> RevokedToken | None:
        """The database's record of a jti (None: never revoked, or purged after expiry)."""
        check_text("jti", jti, JTI_MAX, required=True)
        return self._store.token(jti)

    # -- purge ------------------------------------------------------------------------------------

    def purge(
        self, older_than: datetime, *, actor: str = "m1:purge", dry_run: bool = False
    ) -> PurgeSummary:
        """Delete records of tokens that expired before ``older_than``, and rules that can no
        longer match any token; audited with counts. A dry run only counts.

        ``older_than`` may not lie in the future: a record whose token is still valid must stay.
        """
        _check_aware("older_than", older_than)
        check_text("actor", actor, ACTOR_MAX, required=True)
        if older_than > datetime.now(UTC):
            raise InputError(
                "older_than",
                f"{older_than.isoformat()} is in the future (it would un-revoke live tokens)",
                ["a time at or before now"],
            )
        summary = self._store.purge(older_than, actor=actor, dry_run=dry_run)
        if not dry_run:
            logger.info(
                "purged %d token records and %d rules expired before %s (by %s)",
                summary.tokens,
                summary.rules,
                summary.older_than.isoformat(),
                actor,
            )
        return summary

    def purge_long_expired_tokens(self, older_than: datetime) -> int:
        """The seed's purge: delete what expired before ``older_than``; returns token records."""
        return self.purge(older_than).tokens


def _check_aware(path: str, value: datetime) -> None:
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise InputError(path, f"{value!r} has no time zone", ["an aware datetime (UTC)"])
