"""What the revocation tests share: a PostgreSQL database of the package's own, managers on it.

The database's tables are emptied per test; database outages go through a TCP proxy the test
cuts, so the shared server is never touched.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from m1lib.db.session import Database
from m1lib.policy import PolicyEngine
from m1lib.revocation import RevocationManager
from m1lib.settings import Settings
from m1lib.tokens import TokenCodec
from tests.m1lib.revocation.revocation_proc import create_database
from tests.services import PG_SERVER, TcpProxy, drop_database

ManagerFactory = Callable[..., RevocationManager]


SECRET = "r" * 48


@pytest.fixture(scope="package")
def database_name(pg_url: str) -> Iterator[str]:
    """pg_url only makes the tests skip (or fail in CI) without PostgreSQL."""
    name = create_database()
    yield name
    drop_database(name)


@pytest.fixture
def db_url(database_name: str) -> str:
    url = f"{PG_SERVER}/{database_name}"
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(
            text("TRUNCATE revoked_tokens, revocation_rules, revocation_audit RESTART IDENTITY")
        )
    engine.dispose()
    return url


@pytest.fixture
def make_manager(make_settings: Callable[..., Settings], db_url: str) -> Iterator[ManagerFactory]:
    """Managers on the package's database; closed (and their engines disposed) at teardown."""
    built: list[tuple[RevocationManager, Database]] = []

    def factory(
        *, url: str | None = None, redis: dict[str, Any] | None = None, **revocation: Any
    ) -> RevocationManager:
        settings = make_settings(
            database={"url": url or db_url, "connect_timeout_s": 1},
            redis=redis or {},
            revocation=revocation,
            jwt={"secret": SECRET},
        )
        db = Database(settings)
        manager = RevocationManager(settings=settings, db=db)
        built.append((manager, db))
        return manager

    yield factory
    for manager, db in built:
        manager.close()
        db.dispose()


@pytest.fixture
def proxy(database_name: str) -> Iterator[TcpProxy]:
    server = TcpProxy(5432)
    server.start()
    yield server
    server.cut()


def new_jti() -> str:
    return str(uuid.uuid4())


def claims(
    jti: str | None = None,
    *,
    tool: str = "web_search",
    sub: str = "agent-1",
    iat: float | None = None,
) -> dict[str, Any]:
    issued = int(time.time()) if iat is None else iat
    return {
        "jti": jti or new_jti(),
        "toolName": tool,
        "sub": sub,
        "scope": "read",
        "iat": issued,
        "exp": issued + 300,
    }


def loaded(manager: RevocationManager) -> RevocationManager:
    manager.load()
    return manager


def engine_for(manager: RevocationManager) -> PolicyEngine:
    """A policy engine whose every verify consults ``manager``, as in the API process."""
    codec = TokenCodec.from_settings(manager.settings)
    return PolicyEngine(settings=manager.settings, codec=codec, revocation=manager)
