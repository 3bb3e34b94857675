"""Keeping one process's revocation state in step with the database and the other replicas.

Three paths, from fastest to surest:

- **pub/sub**: a revoking process publishes after its commit; subscribers add the jti at once.
  Redis drops messages (a subscriber that is reconnecting hears nothing), so it is only a hint.
- **resync** every ``M1_REVOCATION_RESYNC_S``: rows past the id cursor, plus every row written
  in the last ``M1_REVOCATION_OVERLAP_S`` (ids and timestamps are not commit order). Right after
  a (re)subscription too, since messages sent while we were away are lost.
- **reconciliation** every ``M1_REVOCATION_RECONCILE_S``: count and hash of everything older
  than the overlap window on both sides; on a difference, a full reload. It also drops purged
  records, which the cursors never see disappear.

A resync is "successful" only when the database answered; the state's freshness is the time of
that read, and past ``M1_REVOCATION_MAX_STALENESS_S`` the manager fails closed.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import exc

from m1lib.epoch import to_us
from m1lib.errors import M1Error
from m1lib.loops import Loop, LoopThreads
from m1lib.redis_conn import key
from m1lib.revocation.state import RevocationState, RuleEntry
from m1lib.subscriber import run_subscriber

if TYPE_CHECKING:
    from m1lib.revocation.store import RevocationStore
    from m1lib.settings import Settings

__all__ = ["Synchronizer", "decode_message", "encode_rule", "encode_token", "revocation_channel"]

logger = logging.getLogger("m1.revocation")

# What the loops survive and retry: the database or Redis being down or refusing a statement.
_TRANSIENT: tuple[type[BaseException], ...] = (M1Error, exc.SQLAlchemyError)


def revocation_channel(settings: Settings) -> str:
    """The Redis channel revocations are announced on (after their commit)."""
    return key(settings, "revocations")


def encode_token(jti: str, revoked_at_us: int) -> str:
    return json.dumps({"jti": jti, "at": revoked_at_us}, separators=(",", ":"))


def encode_rule(rule_id: int, rule: RuleEntry) -> str:
    return json.dumps(
        {
            "rule": rule_id,
            "tool": rule.tool_name,
            "sub": rule.subject,
            "before": rule.issued_before_s,
            "at": rule.created_at_us,
        },
        separators=(",", ":"),
    )


def decode_message(data: bytes | str) -> tuple[str, int] | tuple[int, RuleEntry] | None:
    """A jti ``(jti, revoked_at_us)`` or a rule ``(id, entry)``; None for anything malformed."""
    try:
        message = json.loads(data)
        if not isinstance(message, dict):
            return None
        if "jti" in message:
            jti, at = message["jti"], message["at"]
            if isinstance(jti, str) and 0 < len(jti) <= 64 and type(at) is int:
                return jti, at
            return None
        rule_id, tool, subject = message["rule"], message["tool"], message["sub"]
        before, at = message["before"], message["at"]
        if (
            type(rule_id) is int
            and isinstance(tool, str | None)
            and isinstance(subject, str | None)
            and isinstance(before, int | float)
            and not isinstance(before, bool)
            and type(at) is int
        ):
            return rule_id, RuleEntry(tool, subject, float(before), at)
    except (ValueError, KeyError, TypeError):
        pass
    return None


class Synchronizer:
    """The background threads that keep a :class:`RevocationState` current.

    One sync runs at a time (the thread or a caller of :meth:`sync_once`). The first sync is a
    full load; until it succeeds the state is not loaded and the manager denies.
    """

    def __init__(
        self, *, settings: Settings, store: RevocationStore, state: RevocationState
    ) -> None:
        self.settings = settings
        self._store = store
        self._state = state
        config = settings.revocation
        self._resync_s = config.resync_s
        self._reconcile_s = config.reconcile_s
        self._overlap = timedelta(seconds=config.overlap_s)
        self._channel = revocation_channel(settings)
        self._sync_lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._loops = LoopThreads("m1-revocation", stop=self._stop, wake=self._wake, logger=logger)
        self._token_cursor = 0
        self._rule_cursor = 0
        self._since: datetime | None = None  # start of the next resync's overlap window
        self._next_reconcile = 0.0
        self._failing_since: float | None = None
        self._last_failure_log = 0.0
        self._stale_reported = False
        self.subscribed = False
        self.reconciliations = 0  # full reloads done because the digests differed

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        loops: list[Loop] = [("sync", self._sync_loop)]
        if self.settings.redis_url is not None:
            loops.append(("subscriber", self._subscriber_loop))
        self._loops.start(loops)

    def stop(self) -> None:
        self._loops.stop(after=self._mark_unsubscribed)

    def _mark_unsubscribed(self) -> None:
        self.subscribed = False

    @property
    def running(self) -> bool:
        return self._loops.running

    def wake(self) -> None:
        """Resync now instead of at the end of the period."""
        self._wake.set()

    # -- one step, public so owners (and tests) can run it synchronously ----------------------

    def sync_once(self) -> None:
        """Full load if nothing is loaded yet, else a resync (and a reconciliation when due)."""
        with self._sync_lock:
            if not self._state.loaded:
                self._full_load()
                return
            self._resync()
            if time.monotonic() >= self._next_reconcile:
                self._reconcile()

    def reconcile_now(self) -> bool:
        """Compare digests now; True when a full reload was needed."""
        with self._sync_lock:
            if not self._state.loaded:
                self._full_load()
                return True
            return self._reconcile()

    def full_reload(self) -> tuple[int, int]:
        """Replace the state with the database's now: (jtis dropped, jtis added). Drops what was
        purged from the database (expired records), which a resync never sees disappear."""
        with self._sync_lock:
            return self._full_load()

    def _full_load(self) -> tuple[int, int]:
        began = time.monotonic()
        snapshot = self._store.snapshot()
        keep_since = to_us(snapshot.db_now - self._overlap)
        changed = self._state.replace(snapshot.jtis, snapshot.rules, keep_since_us=keep_since)
        self._token_cursor = max(self._token_cursor, snapshot.max_token_id)
        self._rule_cursor = max(self._rule_cursor, snapshot.max_rule_id)
        self._since = snapshot.db_now - self._overlap
        first = not self._state.loaded
        self._state.mark_synced(began)
        self._next_reconcile = began + self._reconcile_s
        if first:
            logger.info(
                "revocation state loaded: %d revoked jtis, %d rules in %.0f ms",
                len(snapshot.jtis),
                len(snapshot.rules),
                (time.monotonic() - began) * 1000,
            )
        return changed

    def _resync(self) -> None:
        began = time.monotonic()
        assert self._since is not None  # set by the full load
        changes = self._store.changes(
            after_token_id=self._token_cursor, after_rule_id=self._rule_cursor, since=self._since
        )
        self._state.add_jtis(changes.jtis)
        if changes.rules:
            self._state.add_rules(changes.rules)
        self._token_cursor = max(self._token_cursor, changes.max_token_id)
        self._rule_cursor = max(self._rule_cursor, changes.max_rule_id)
        self._since = changes.db_now - self._overlap
        self._state.mark_synced(began)

    def _reconcile(self) -> bool:
        began = time.monotonic()
        digest = self._store.digest(self._overlap)
        local = self._state.digest(to_us(digest.bound))
        remote = (digest.token_count, digest.token_hash, digest.rule_count, digest.rule_id_sum)
        self._next_reconcile = began + self._reconcile_s
        if local == remote:
            return False
        snapshot = self._store.snapshot()
        removed, added = self._state.replace(
            snapshot.jtis, snapshot.rules, keep_since_us=to_us(snapshot.db_now - self._overlap)
        )
        self._token_cursor = max(self._token_cursor, snapshot.max_token_id)
        self._rule_cursor = max(self._rule_cursor, snapshot.max_rule_id)
        self._since = snapshot.db_now - self._overlap
        self._state.mark_synced(began)
        self.reconciliations += 1
        log = logger.warning if added else logger.info
        log(
            "revocation state reconciled with the database: %d jtis added, %d dropped "
            "(purged or never committed); local %d/%d rules, database %d/%d",
            added,
            removed,
            local[0],
            local[2],
            digest.token_count,
            digest.rule_count,
        )
        return True

    # -- the loops ------------------------------------------------------------------------------

    def _sync_loop(self) -> None:
        while self._loops.pause(self._resync_s):
            try:
                self.sync_once()
            except _TRANSIENT as error:
                self._report_failure(error)
            else:
                self._report_recovery()
            self._report_staleness()

    def _report_failure(self, error: BaseException) -> None:
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
        if now - self._last_failure_log >= self.settings.revocation.max_staleness_s:
            self._last_failure_log = now
            what = "resync" if self._state.loaded else "first load"
            logger.warning(
                "revocation %s failed (failing for %.1f s, retrying every %.1f s): %s",
                what,
                now - self._failing_since,
                self._resync_s,
                error,
            )

    def _report_recovery(self) -> None:
        if self._failing_since is not None:
            logger.info(
                "revocation resync works again after %.1f s",
                time.monotonic() - self._failing_since,
            )
            self._failing_since = None
            self._last_failure_log = 0.0

    def _report_staleness(self) -> None:
        fresh = self._state.is_fresh()
        if not fresh and not self._stale_reported and self._state.loaded:
            self._stale_reported = True
            config = self.settings.revocation
            if config.fail_open:
                logger.critical(
                    "revocation state is older than %.1f s and M1_REVOCATION_FAIL_OPEN is set: "
                    "tokens are ACCEPTED without a current revocation check",
                    config.max_staleness_s,
                )
            else:
                logger.error(
                    "revocation state is older than %.1f s: every token is denied "
                    "(revocation_state_stale) and this replica reports not ready",
                    config.max_staleness_s,
                )
        elif fresh and self._stale_reported:
            self._stale_reported = False
            logger.info("revocation state is fresh again")

    def _subscriber_loop(self) -> None:
        """Apply announced revocations at once; resync goes on while Redis is away."""
        run_subscriber(
            self.settings,
            self._channel,
            stop=self._stop,
            on_message=self._apply,
            on_subscribed=self._on_subscribed,
            on_lost=self._mark_unsubscribed,
            label="revocation subscriber",
            meanwhile="resync continues",
            logger=logger,
        )

    def _on_subscribed(self) -> None:
        self.subscribed = True
        self.wake()  # announcements sent while we were not subscribed are lost

    def _apply(self, data: Any) -> None:
        decoded = decode_message(data)
        if decoded is None:
            logger.debug("ignored a malformed revocation announcement: %r", data)
            return
        first, second = decoded
        if isinstance(first, str) and isinstance(second, int):
            self._state.add_jti(first, second)
        elif isinstance(first, int) and isinstance(second, RuleEntry):
            self._state.add_rules([(first, second)])
