"""The in-memory revocation state every verify consults: no I/O, no lock on the read side.

Readers (the hot path) only look up dicts. Writers (``revoke_token`` callers, the subscriber, the
resync thread) serialise on one lock among themselves. The jti dict only ever grows in place
(a single dict store is atomic under the GIL, and readers do not iterate it); anything that removes
entries builds a new dict and swaps the reference, so a reader sees either the old or the new one.
The rule index is rebuilt and swapped whole on every rule change; there are few rules.

Times are kept as the database's clock in integer microseconds (``revoked_at``, ``created_at``)
so the reconciliation can compare "everything older than a bound" exactly on both sides, and as
float epoch seconds for ``issued_before`` because that is what a token's ``iat`` is compared with.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from m1lib.epoch import to_us

__all__ = ["RevocationState", "RuleEntry", "jti_hash"]

# Subject map of one tool (or of "any tool", key None): subject (None: any) -> latest issued_before.
_SubjectIndex = dict[str | None, float]
_RuleIndex = dict[str | None, _SubjectIndex]
_NUMBER = (int, float)


def jti_hash(jti: str) -> int:
    """60 bits of MD5, the same value PostgreSQL computes in the reconciliation's SQL."""
    return int(hashlib.md5(jti.encode(), usedforsecurity=False).hexdigest()[:15], 16)


class RuleEntry(NamedTuple):
    """A not-before rule as the state needs it."""

    tool_name: str | None
    subject: str | None
    issued_before_s: float  # epoch seconds, compared with a token's iat
    created_at_us: int  # database clock, for the reconciliation bound

    @classmethod
    def from_rule(cls, rule: Any) -> RuleEntry:
        """The entry of a rule: a ``revocation_rules`` row or a :class:`RevocationRule` record
        (anything with their ``tool_name``, ``subject``, ``issued_before`` and ``created_at``)."""
        return cls(
            tool_name=rule.tool_name,
            subject=rule.subject,
            issued_before_s=rule.issued_before.timestamp(),
            created_at_us=to_us(rule.created_at),
        )


class RevocationState:
    """Revoked jtis and not-before rules of one process, with the freshness of that knowledge.

    >>> state = RevocationState(max_staleness_s=10)
    >>> state.add_jti("0b6f...", revoked_at_us)
    >>> "0b6f..." in state.jtis
    True
    """

    def __init__(self, *, max_staleness_s: float) -> None:
        self.max_staleness_s = max_staleness_s
        # Read without a lock by the hot path; replaced (not mutated) by removals.
        self.jtis: dict[str, int] = {}
        self.rule_index: _RuleIndex = {}
        # Monotonic deadline past which the state counts as stale; 0.0 until the first full load.
        self.fresh_until = 0.0
        self.loaded = False
        self.last_sync: float | None = None  # monotonic time of the last successful sync
        self._rules: dict[int, RuleEntry] = {}
        self._lock = threading.Lock()

    # -- reads (hot path: plain lookups) ------------------------------------------------------

    def denied_by_rule(self, claims: Mapping[str, Any]) -> bool:
        """Whether a not-before rule matches the claims' ``toolName``, ``sub`` and ``iat``.

        A claims set without a numeric ``iat`` that a rule could match is denied: a rule exists to
        deny, and a token that cannot prove when it was issued cannot prove it is newer.
        """
        index = self.rule_index
        if not index:
            return False
        tool = claims.get("toolName")
        subject = claims.get("sub")
        if tool.__class__ is not str:
            tool = None
        if subject.__class__ is not str:
            subject = None
        latest: float | None = None
        for tool_key in (tool, None) if tool is not None else (None,):
            by_subject = index.get(tool_key)
            if by_subject is None:
                continue
            for subject_key in (subject, None) if subject is not None else (None,):
                value = by_subject.get(subject_key)
                if value is not None and (latest is None or value > latest):
                    latest = value
        if latest is None:
            return False
        iat = claims.get("iat")
        if not isinstance(iat, _NUMBER) or isinstance(iat, bool):
            return True
        return iat < latest

    @property
    def rule_count(self) -> int:
        return len(self._rules)

    def sync_age_s(self, now: float | None = None) -> float | None:
        if self.last_sync is None:
            return None
        return max(0.0, (time.monotonic() if now is None else now) - self.last_sync)

    def is_fresh(self) -> bool:
        return time.monotonic() <= self.fresh_until

    # -- writes (serialised by the writer lock) -----------------------------------------------

    def add_jti(self, jti: str, revoked_at_us: int) -> bool:
        """Add one revoked jti; False when it was known already."""
        with self._lock:
            if jti in self.jtis:
                return False
            self.jtis[jti] = revoked_at_us
            return True

    def add_jtis(self, entries: Iterable[tuple[str, int]]) -> int:
        """Add revoked jtis; returns how many were new."""
        added = 0
        with self._lock:
            jtis = self.jtis
            for jti, revoked_at_us in entries:
                if jti not in jtis:
                    jtis[jti] = revoked_at_us
                    added += 1
        return added

    def add_rules(self, entries: Iterable[tuple[int, RuleEntry]]) -> int:
        """Add rules by id and swap in a new index; returns how many were new."""
        with self._lock:
            new = {rule_id: rule for rule_id, rule in entries if rule_id not in self._rules}
            if new:
                self._rules.update(new)
                self.rule_index = _build_index(self._rules.values())
            return len(new)

    def replace(
        self,
        jtis: Mapping[str, int],
        rules: Mapping[int, RuleEntry],
        *,
        keep_since_us: int | None,
    ) -> tuple[int, int]:
        """Swap in what the database holds, keeping local entries at or after ``keep_since_us``.

        Entries that recent may have been committed after the database was read (they came by
        pub/sub or from this process), so dropping them could un-revoke a token for a moment.
        Returns (jtis removed, jtis added) compared with the state before.
        """
        with self._lock:
            current = self.jtis
            merged = dict(jtis)
            if keep_since_us is not None:
                for jti, revoked_at_us in current.items():
                    if revoked_at_us >= keep_since_us and jti not in merged:
                        merged[jti] = revoked_at_us
            removed = sum(1 for jti in current if jti not in merged)
            added = sum(1 for jti in merged if jti not in current)
            merged_rules = dict(rules)
            if keep_since_us is not None:
                for rule_id, rule in self._rules.items():
                    if rule.created_at_us >= keep_since_us:
                        merged_rules.setdefault(rule_id, rule)
            self.jtis = merged
            self._rules = merged_rules
            self.rule_index = _build_index(merged_rules.values())
            return removed, added

    def mark_synced(self, at: float | None = None) -> None:
        """Record a successful full load or resync: the state is fresh for ``max_staleness_s``."""
        now = time.monotonic() if at is None else at
        self.last_sync = now
        self.loaded = True
        self.fresh_until = now + self.max_staleness_s

    def digest(self, before_us: int) -> tuple[int, int, int, int]:
        """What the store's ``digest`` computes, over the entries written before ``before_us``:
        jti count, summed ``jti_hash``, rule count, summed rule ids."""
        with self._lock:
            items = list(self.jtis.items())
            rules = list(self._rules.items())
        count = 0
        total = 0
        for jti, revoked_at_us in items:
            if revoked_at_us < before_us:
                count += 1
                total += jti_hash(jti)
        older_rules = [rule_id for rule_id, rule in rules if rule.created_at_us < before_us]
        return count, total, len(older_rules), sum(older_rules)


def _build_index(rules: Iterable[RuleEntry]) -> _RuleIndex:
    """tool -> subject -> the latest ``issued_before``: one rule per key is all a check needs."""
    index: _RuleIndex = {}
    for rule in rules:
        by_subject = index.setdefault(rule.tool_name, {})
        previous = by_subject.get(rule.subject)
        if previous is None or rule.issued_before_s > previous:
            by_subject[rule.subject] = rule.issued_before_s
    return index
