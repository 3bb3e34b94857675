"""Revocation across two real processes sharing PostgreSQL and Redis.

The other process is ``tests/m1lib/revocation/revocation_proc.py``: a RevocationManager with its
threads, asked over a pipe what it decides. Revocations come from this process's manager. Every
wait is a deadline loop; no test asserts how long anything took.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from m1lib.db.session import Database
from m1lib.errors import DatabaseUnavailable
from m1lib.revocation import RevocationManager, revocation_channel
from m1lib.settings import Settings
from tests.conftest import subscribers
from tests.m1lib.revocation.revocation_proc import ReplicaProcess, create_database
from tests.services import PG_SERVER, OwnRedis, TcpProxy, drop_database
from tests.waiting import wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

# A resync this slow cannot explain a fast catch-up: only pub/sub (or a reconnect) can.
SLOW_RESYNC = {"resync_s": 30, "max_staleness_s": 120}


@pytest.fixture(scope="module")
def database_name(pg_url: str) -> Iterator[str]:
    name = create_database()
    yield name
    drop_database(name)


@pytest.fixture
def db_url(database_name: str) -> str:
    return f"{PG_SERVER}/{database_name}"


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Callable[..., ReplicaProcess]]:
    started: list[ReplicaProcess] = []

    def start(**options: Any) -> ReplicaProcess:
        started.append(ReplicaProcess(tmp_path, **options))
        return started[-1]

    yield start
    for process in started:
        process.stop()


@pytest.fixture
def make_manager(
    make_settings: Callable[..., Settings],
) -> Iterator[Callable[..., RevocationManager]]:
    built: list[tuple[RevocationManager, Database]] = []

    def factory(db_url: str, **redis: Any) -> RevocationManager:
        settings = make_settings(database={"url": db_url, "connect_timeout_s": 1}, redis=redis)
        db = Database(settings)
        built.append((RevocationManager(settings=settings, db=db), db))
        return built[-1][0]

    yield factory
    for manager, db in built:
        manager.close()
        db.dispose()


def ready(process: ReplicaProcess, *, subscribed: bool = False) -> None:
    def check() -> bool:
        status = process.ask("status")
        return bool(status["ready"] and (status["subscribed"] or not subscribed))

    wait_for(check, "the other process's first load" + (" and subscription" if subscribed else ""))


def new_jti() -> str:
    return str(uuid.uuid4())


def test_revoke_in_one_process_is_denied_by_the_other(
    processes: Callable[..., ReplicaProcess],
    make_manager: Callable[..., RevocationManager],
    db_url: str,
    shared_redis_url: str,
    redis_prefix: str,
) -> None:
    other = processes(
        db_url=db_url, redis_url=shared_redis_url, redis_prefix=redis_prefix, **SLOW_RESYNC
    )
    ready(other, subscribed=True)
    manager = make_manager(db_url, url=shared_redis_url, prefix=redis_prefix)
    jti = new_jti()
    manager.revoke_token(jti, "leak", "alice", tool_name="web_search")
    wait_for(lambda: other.ask("missing", jtis=[jti])["missing"] == [], "the other process")
    old = {"jti": new_jti(), "toolName": "run_sql", "sub": "a", "iat": int(time.time()) - 10}
    manager.revoke_all(
        tool_name="run_sql", issued_before=datetime.now(UTC), reason="r", revoked_by="alice"
    )
    wait_for(lambda: other.ask("denial", claims=old)["reason"] == "revoked", "the rule")
    fresh = {"jti": new_jti(), "toolName": "web_search", "sub": "a", "iat": int(time.time())}
    assert other.ask("denial", claims=fresh)["reason"] is None


def test_resync_catches_every_revocation_without_pubsub(
    processes: Callable[..., ReplicaProcess],
    make_manager: Callable[..., RevocationManager],
    db_url: str,
    shared_redis_url: str,
    redis_prefix: str,
) -> None:
    """The other process is not subscribed at all: every announcement is dropped for it."""
    other = processes(db_url=db_url, resync_s=0.1, max_staleness_s=5)
    ready(other)
    manager = make_manager(db_url, url=shared_redis_url, prefix=redis_prefix)
    assert subscribers(shared_redis_url, revocation_channel(manager.settings)) == 0
    jtis = [new_jti() for _ in range(60)]

    def revoke(part: list[str]) -> None:  # concurrent writers: ids commit out of order
        for jti in part:
            manager.revoke_token(jti, "bulk", "alice")

    threads = [threading.Thread(target=revoke, args=(jtis[n::4],)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    wait_for(lambda: other.ask("missing", jtis=jtis)["missing"] == [], "every jti by resync")


def test_redis_killed_and_restarted_loses_nothing(
    processes: Callable[..., ReplicaProcess],
    make_manager: Callable[..., RevocationManager],
    db_url: str,
    own_redis: OwnRedis,
) -> None:
    other = processes(db_url=db_url, redis_url=own_redis.url, **SLOW_RESYNC)
    ready(other, subscribed=True)
    manager = make_manager(db_url, url=own_redis.url, timeout_s=0.2)
    before = new_jti()
    manager.revoke_token(before, "before the outage", "alice")
    wait_for(lambda: other.ask("missing", jtis=[before])["missing"] == [], "pub/sub before")

    own_redis.stop()
    during = [new_jti() for _ in range(5)]
    for jti in during:
        manager.revoke_token(jti, "during the outage", "alice")  # announcement fails: logged
    own_redis.start()
    # The resync period is 30 s: only the resync after the reconnect can bring these in.
    wait_for(lambda: other.ask("missing", jtis=during)["missing"] == [], "catch-up on reconnect")
    after = new_jti()
    wait_for(lambda: other.ask("status")["subscribed"], "the new subscription")
    manager.revoke_token(after, "after the outage", "alice")
    wait_for(lambda: other.ask("missing", jtis=[after])["missing"] == [], "pub/sub after")


def test_failed_revoke_claims_nothing_anywhere(
    processes: Callable[..., ReplicaProcess],
    make_manager: Callable[..., RevocationManager],
    db_url: str,
    database_name: str,
    shared_redis_url: str,
    redis_prefix: str,
) -> None:
    other = processes(db_url=db_url, redis_url=shared_redis_url, redis_prefix=redis_prefix)
    ready(other, subscribed=True)
    proxy = TcpProxy(5432)
    proxy.start()
    try:
        cut_off = make_manager(
            proxy.url_for(database_name), url=shared_redis_url, prefix=redis_prefix
        )
        cut_off.load()
        proxy.cut()
        failed = new_jti()
        with pytest.raises(DatabaseUnavailable):
            cut_off.revoke_token(failed, "leak", "alice")
    finally:
        proxy.cut()
    # A later revocation reaching the other process proves it has heard all there was to hear.
    sentinel = new_jti()
    make_manager(db_url, url=shared_redis_url, prefix=redis_prefix).revoke_token(
        sentinel, "sentinel", "alice"
    )
    wait_for(lambda: other.ask("missing", jtis=[sentinel])["missing"] == [], "the sentinel")
    assert other.ask("missing", jtis=[failed])["missing"] == [failed]
    assert not cut_off.is_revoked(failed)


def test_replica_cut_off_from_the_database_fails_closed(
    processes: Callable[..., ReplicaProcess],
    database_name: str,
) -> None:
    proxy = TcpProxy(5432)
    proxy.start()
    try:
        other = processes(db_url=proxy.url_for(database_name), resync_s=0.05, max_staleness_s=0.5)
        ready(other)
        claims = {"jti": new_jti(), "toolName": "web_search", "sub": "a", "iat": int(time.time())}
        assert other.ask("denial", claims=claims)["reason"] is None
        proxy.cut()
        wait_for(lambda: not other.ask("status")["ready"], "not ready past the staleness bound")
        assert other.ask("denial", claims=claims)["reason"] == "revocation_state_stale"
        proxy.restore()
        ready(other)
        assert other.ask("denial", claims=claims)["reason"] is None
    finally:
        proxy.cut()
