"""API credentials: named keys with a role; only a key's SHA-256 is stored, compared in constant time.

Keys are 256-bit random strings, so a fast hash is enough (no password stretching needed); the
lookup is by hash and the final check uses ``hmac.compare_digest``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import UTC, datetime
from enum import StrEnum

from sqlalchemy import select

from m1lib.db.models import ApiCredential
from m1lib.db.session import Database

KEY_PREFIX = "m1_"


class Role(StrEnum):
    VIEWER = "viewer"
    ADMIN = "admin"


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def key_matches(key: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_key(key), stored_hash)


def store_credential(db: Database, name: str, role: Role, key: str, *, created_by: str) -> None:
    with db.transaction() as session:
        session.add(
            ApiCredential(
                name=name,
                role=role.value,
                key_hash=hash_key(key),
                created_at=datetime.now(UTC),
                created_by=created_by,
                revoked_at=None,
            )
        )


def count_credentials(db: Database) -> int:
    with db.transaction() as session:
        return len(session.scalars(select(ApiCredential.name)).all())
