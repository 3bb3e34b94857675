"""API credentials (``m1lib.auth``): only a key's SHA-256 is stored; the store refreshes in time.

The HTTP side (401/403 per route, header forms) is in ``tests/m1lib/api/test_auth.py``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator

import pytest

from m1lib import auth
from m1lib.auth import Credential, CredentialStore, Permission, Role, roles_with
from m1lib.db import migrate
from m1lib.db.session import Database
from m1lib.errors import InputError, M1Error
from m1lib.settings import Settings


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def db(make_settings: Callable[..., Settings]) -> Iterator[Database]:
    database = Database(make_settings())
    migrate.upgrade(database)
    yield database
    database.dispose()


def test_a_key_is_returned_once_and_only_its_sha256_is_stored(db: Database) -> None:
    key = auth.create_credential(db, "ops-admin", "admin", created_by="cli:alice")
    assert key.startswith(auth.KEY_PREFIX)
    assert len(key) == len(auth.KEY_PREFIX) + 43  # 32 random bytes, URL-safe base64
    (row,) = auth.list_credentials(db)
    assert row.key_hash == hashlib.sha256(key.encode()).hexdigest()
    stored = [str(getattr(row, column.key)) for column in row.__table__.columns]
    assert all(key not in value and key[3:] not in value for value in stored)
    assert (row.name, row.role, row.created_by, row.revoked_at) == (
        "ops-admin",
        "admin",
        "cli:alice",
        None,
    )
    assert row.created_at.tzinfo is not None


def test_keys_are_random_and_match_only_their_own_hash() -> None:
    keys = {auth.new_key() for _ in range(50)}
    assert len(keys) == 50
    key, other = sorted(keys)[:2]
    assert auth.hash_key(key) == hashlib.sha256(key.encode()).hexdigest()
    assert auth.key_matches(key, auth.hash_key(key))
    assert not auth.key_matches(other, auth.hash_key(key))
    assert not auth.key_matches(key, "")


def test_a_stored_key_of_the_callers_choosing_is_hashed_too(db: Database) -> None:
    auth.store_credential(db, "seeded", Role.VIEWER, "m1_chosen-key", created_by="bootstrap")
    (row,) = auth.list_credentials(db)
    assert row.key_hash == auth.hash_key("m1_chosen-key")
    assert row.role == "viewer"


@pytest.mark.parametrize("name", ["", "Ops", "-ops", ".ops", "has space", "a" * 65, "ops/1", "é"])
def test_a_bad_name_is_refused_and_nothing_is_stored(db: Database, name: str) -> None:
    with pytest.raises(InputError, match=r"^name: .* is not a credential name"):
        auth.create_credential(db, name, "viewer", created_by="test")
    assert auth.count_credentials(db) == 0


def test_a_bad_role_is_refused_naming_the_roles(db: Database) -> None:
    with pytest.raises(
        InputError, match=r"^role: 'root' is not a role; allowed: viewer, agent, service, admin$"
    ):
        auth.create_credential(db, "ops", "root", created_by="test")
    assert auth.count_credentials(db) == 0


def test_a_name_in_use_even_revoked_is_refused(db: Database) -> None:
    auth.create_credential(db, "ops", "viewer", created_by="test")
    assert auth.revoke_credential(db, "ops")
    with pytest.raises(M1Error):
        auth.create_credential(db, "ops", "admin", created_by="test")
    (row,) = auth.list_credentials(db)
    assert row.role == "viewer"


def test_a_name_in_use_is_refused_naming_it(db: Database) -> None:
    auth.create_credential(db, "ops", "viewer", created_by="test")
    with pytest.raises(InputError, match=r"^name: a credential named 'ops' already exists"):
        auth.create_credential(db, "ops", "admin", created_by="test")


@pytest.mark.postgres
def test_a_name_in_use_is_refused_naming_it_on_postgresql(
    fresh_pg_url: str, make_settings: Callable[..., Settings]
) -> None:
    db = Database(make_settings(database={"url": fresh_pg_url}))
    try:
        migrate.upgrade(db)
        test_a_name_in_use_is_refused_naming_it(db)
    finally:
        db.dispose()


def test_listing_is_by_name_and_keeps_revoked_credentials(db: Database) -> None:
    for name in ("zeta", "alpha", "mid"):
        auth.create_credential(db, name, "viewer", created_by="test")
    assert auth.revoke_credential(db, "mid")
    assert not auth.revoke_credential(db, "mid")  # already revoked
    assert not auth.revoke_credential(db, "nobody")
    rows = auth.list_credentials(db)
    assert [row.name for row in rows] == ["alpha", "mid", "zeta"]
    assert [row.revoked_at is not None for row in rows] == [False, True, False]
    assert rows[1].revoked_at.tzinfo is not None
    assert auth.count_credentials(db) == 3


def test_roles_are_a_permission_table_not_an_order() -> None:
    assert {role: role.permissions for role in Role} == {
        Role.VIEWER: {Permission.READ, Permission.INTROSPECT_TOKENS},
        Role.AGENT: {Permission.RECORD_EVENTS, Permission.INTROSPECT_TOKENS},
        Role.SERVICE: {Permission.READ, Permission.RECORD_EVENTS, Permission.INTROSPECT_TOKENS},
        Role.ADMIN: set(Permission),
    }
    assert all(Role.ADMIN.allows(permission) for permission in Permission)
    assert not Role.VIEWER.allows(Permission.RECORD_EVENTS)
    assert not Role.AGENT.allows(Permission.READ)  # neither below nor above a viewer
    assert roles_with(Permission.INTROSPECT_TOKENS) == [
        Role.VIEWER,
        Role.AGENT,
        Role.SERVICE,
        Role.ADMIN,
    ]
    assert roles_with(Permission.RECORD_EVENTS) == [Role.AGENT, Role.SERVICE, Role.ADMIN]
    assert roles_with(Permission.READ) == [Role.VIEWER, Role.SERVICE, Role.ADMIN]
    assert roles_with(Permission.ISSUE_TOKENS) == [Role.ADMIN]


def test_an_agent_credential_is_stored_and_authenticated(db: Database) -> None:
    key = auth.create_credential(db, "flow-runner", "agent", created_by="test")
    store = CredentialStore(db, refresh_s=30)
    assert store.authenticate(key) == Credential("flow-runner", Role.AGENT, auth.hash_key(key))


def test_the_store_authenticates_active_keys_only(db: Database) -> None:
    admin = auth.create_credential(db, "ops-admin", "admin", created_by="test")
    viewer = auth.create_credential(db, "ops-viewer", "viewer", created_by="test")
    auth.revoke_credential(db, "ops-viewer")
    store = CredentialStore(db, refresh_s=30)
    assert store.authenticate(admin) == Credential("ops-admin", Role.ADMIN, auth.hash_key(admin))
    assert store.authenticate(viewer) is None
    assert store.authenticate("m1_" + "x" * 43) is None
    assert store.authenticate("") is None
    assert store.by_name("ops-admin") is not None
    assert store.by_name("ops-viewer") is None
    assert store.any_configured()


def test_an_empty_store_says_nothing_is_configured(db: Database) -> None:
    assert not CredentialStore(db, refresh_s=30).any_configured()


def test_a_revocation_reaches_the_store_within_the_refresh_period(db: Database) -> None:
    clock = Clock()
    key = auth.create_credential(db, "ops", "viewer", created_by="test")
    store = CredentialStore(db, refresh_s=30, clock=clock)
    assert store.authenticate(key) is not None
    auth.revoke_credential(db, "ops")
    clock.now += 29
    assert store.authenticate(key) is not None  # still the loaded copy
    clock.now += 1
    assert store.authenticate(key) is None
    assert not store.any_configured()


def test_a_new_key_is_found_on_a_miss_at_most_once_a_second(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock()
    store = CredentialStore(db, refresh_s=300, clock=clock)
    store.refresh()
    key = auth.create_credential(db, "late", "admin", created_by="other-replica")
    reads: list[float] = []
    real = auth.list_credentials

    def counted(database: Database) -> list[object]:
        reads.append(clock.now)
        return list(real(database))

    monkeypatch.setattr(auth, "list_credentials", counted)
    clock.now += 0.5
    for _ in range(20):
        assert store.authenticate(key) is None  # too soon after the last read: no database trip
    assert reads == []
    clock.now += 0.5
    found = store.authenticate(key)
    assert found is not None
    assert found.name == "late"
    assert reads == [clock.now]
    for _ in range(20):
        assert store.authenticate("m1_guess") is None
    assert len(reads) == 1  # guesses cannot hammer the database


def test_authentication_compares_hashes_in_constant_time(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = auth.create_credential(db, "ops", "viewer", created_by="test")
    store = CredentialStore(db, refresh_s=30)
    calls: list[tuple[str, str]] = []
    real = auth.hmac.compare_digest

    def spy(a: str, b: str) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    assert store.authenticate(key) is not None
    assert calls == [(auth.hash_key(key), auth.hash_key(key))]
