"""API credentials: named keys with a role; only a key's SHA-256 is stored, compared in constant time.

Keys are 256-bit random strings, so a fast hash is enough (no password stretching needed). Each
replica keeps the active credentials in memory, refreshed from the database every
``M1_AUTH_REFRESH_S`` and on a miss (at most once a second, so guessing keys cannot hammer the
database); a revoked key stops working everywhere within that period.

A role is a set of permissions (:data:`PERMISSIONS`), not a rank: a route asks for one
:class:`Permission`, and the ``agent`` role (record events, introspect tokens) is neither below
nor above ``viewer``; ``service`` (M1's own flow runs and CLI) reads, records and introspects.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Final, cast

from sqlalchemy import Table, select, update

from m1lib.db.models import ApiCredential
from m1lib.db.session import Database
from m1lib.db.upsert import upsert
from m1lib.errors import InputError

KEY_PREFIX = "m1_"
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_CREDENTIALS = cast(Table, ApiCredential.__table__)
_MISS_REFRESH_MIN_S = 1.0


class Permission(StrEnum):
    """What a route needs; a role is the set of permissions it holds (:data:`PERMISSIONS`)."""

    READ = "read"  # dashboards, queries, listings, health, metrics, command acknowledgements
    INTROSPECT_TOKENS = "introspect_tokens"  # POST /api/m1/tokens/introspect
    RECORD_EVENTS = "record_events"  # POST /api/m1/events
    ISSUE_TOKENS = "issue_tokens"  # POST /api/m1/tokens
    REVOKE_TOKENS = "revoke_tokens"  # POST /api/m1/tokens/revoke, /revoke-all
    ADMIN = "admin"  # control commands, healing overrides (credentials: the CLI only)


class Role(StrEnum):
    VIEWER = "viewer"
    AGENT = "agent"
    SERVICE = "service"
    ADMIN = "admin"

    @property
    def permissions(self) -> frozenset[Permission]:
        return PERMISSIONS[self]

    def allows(self, needed: Permission) -> bool:
        return needed in PERMISSIONS[self]


# The permission table (docs/contracts.md): a role holds exactly these; nothing is implied by rank.
PERMISSIONS: Final[Mapping[Role, frozenset[Permission]]] = MappingProxyType(
    {
        Role.VIEWER: frozenset({Permission.READ, Permission.INTROSPECT_TOKENS}),
        # a process that records events and checks the tokens it is handed, nothing else
        Role.AGENT: frozenset({Permission.RECORD_EVENTS, Permission.INTROSPECT_TOKENS}),
        # M1's own processes (flow runs, the CLI): record events and query them, nothing else
        Role.SERVICE: frozenset(
            {Permission.READ, Permission.RECORD_EVENTS, Permission.INTROSPECT_TOKENS}
        ),
        Role.ADMIN: frozenset(Permission),
    }
)


def roles_with(permission: Permission) -> list[Role]:
    """The roles holding ``permission``, in declaration order (for messages and docs)."""
    return [role for role in Role if permission in PERMISSIONS[role]]


@dataclass(frozen=True)
class Credential:
    """An active credential as a request sees it; ``name`` is the actor in every audit."""

    name: str
    role: Role
    key_hash: str

    @classmethod
    def from_row(cls, row: ApiCredential) -> Credential:
        return cls(row.name, Role(row.role), row.key_hash)


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def key_matches(key: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_key(key), stored_hash)


def _check_name(name: str) -> None:
    if not NAME_PATTERN.match(name):
        raise InputError(
            "name", f"{name!r} is not a credential name", ["1-64 of a-z 0-9 . _ -, starting alnum"]
        )


def _check_role(role: str) -> Role:
    try:
        return Role(role)
    except ValueError:
        raise InputError("role", f"{role!r} is not a role", [r.value for r in Role]) from None


def store_credential(
    db: Database, name: str, role: Role | str, key: str, *, created_by: str
) -> None:
    """Store a credential; a name in use (even revoked) is refused, so audits stay unambiguous."""
    _check_name(name)
    checked = _check_role(str(role))
    values = {
        "name": name,
        "role": checked.value,
        "key_hash": hash_key(key),
        "created_at": datetime.now(UTC),
        "created_by": created_by,
        "revoked_at": None,
    }
    # ON CONFLICT on the name: two processes creating one name at once see one succeed and the
    # other told the name is taken, never a generic refusal
    statement = upsert(db.engine.dialect, _CREDENTIALS, values, ["name"])
    with db.transaction() as session:
        stored = session.execute(statement.returning(_CREDENTIALS.c.name)).first()
    if stored is None:
        raise InputError("name", f"a credential named {name!r} already exists", [])


def create_credential(db: Database, name: str, role: Role | str, *, created_by: str) -> str:
    """Create a credential and return its key: the only time the key exists outside the caller."""
    key = new_key()
    store_credential(db, name, role, key, created_by=created_by)
    return key


def revoke_credential(db: Database, name: str) -> bool:
    with db.transaction() as session:
        result = session.execute(
            update(ApiCredential)
            .where(ApiCredential.name == name, ApiCredential.revoked_at.is_(None))
            .values(revoked_at=datetime.now(UTC))
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]


def list_credentials(db: Database) -> list[ApiCredential]:
    with db.transaction() as session:
        return list(session.scalars(select(ApiCredential).order_by(ApiCredential.name)))


def count_credentials(db: Database) -> int:
    return len(list_credentials(db))


class CredentialStore:
    """The active credentials of this replica, by key hash; safe to call from any thread."""

    def __init__(
        self, db: Database, *, refresh_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._db = db
        self._refresh_s = refresh_s
        self._clock = clock
        self._by_hash: dict[str, Credential] = {}
        self._by_name: dict[str, Credential] = {}
        self._loaded_at: float | None = None
        self._lock = threading.Lock()

    def refresh(self) -> None:
        rows = [row for row in list_credentials(self._db) if row.revoked_at is None]
        credentials = [Credential.from_row(row) for row in rows]
        with self._lock:
            self._by_hash = {c.key_hash: c for c in credentials}
            self._by_name = {c.name: c for c in credentials}
            self._loaded_at = self._clock()

    def _age(self) -> float:
        return float("inf") if self._loaded_at is None else self._clock() - self._loaded_at

    def _fresh(self) -> None:
        if self._age() >= self._refresh_s:
            self.refresh()

    def authenticate(self, key: str) -> Credential | None:
        """The credential whose key this is, or None; the hash comparison is constant-time."""
        self._fresh()
        digest = hash_key(key)
        found = self._by_hash.get(digest)
        if found is None and self._age() >= _MISS_REFRESH_MIN_S:
            self.refresh()  # a key created on another replica a moment ago
            found = self._by_hash.get(digest)
        if found is None or not hmac.compare_digest(digest, found.key_hash):
            return None
        return found

    def by_name(self, name: str) -> Credential | None:
        self._fresh()
        return self._by_name.get(name)

    def any_configured(self) -> bool:
        self._fresh()
        return bool(self._by_hash)
