"""Keeping a manager's state in step: resync window, reconciliation, pub/sub, outages.

Sync paths run against the package's PostgreSQL database and, where pub/sub matters, the shared
Redis under a test prefix. Database outages go through a TCP proxy the test cuts.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from m1lib.policy import Reason
from m1lib.revocation.state import RuleEntry
from m1lib.revocation.sync import decode_message, encode_rule, encode_token
from tests.m1lib.revocation.conftest import (
    ManagerFactory,
    claims,
    loaded,
    new_jti,
)
from tests.services import TcpProxy
from tests.waiting import wait_for

pytestmark = pytest.mark.postgres


def test_started_manager_loads_in_the_background(make_manager: ManagerFactory) -> None:
    writer = make_manager()
    jti = new_jti()
    writer.revoke_token(jti, "before start", "alice")
    manager = make_manager(resync_s=0.05)
    manager.start()
    wait_for(lambda: manager.ready, "the first load")
    assert manager.denial(claims(jti)) is Reason.REVOKED
    assert manager.status().running


def _begin_uncommitted_revocation(url: str, jti: str) -> Any:
    """A revocation whose transaction has its id and timestamp but has not committed yet."""
    engine = create_engine(url)
    connection = engine.connect()
    transaction = connection.begin()
    connection.execute(
        text(
            "INSERT INTO revoked_tokens (jti, reason, revoked_by, revoked_at, expires_at) "
            "VALUES (:jti, 'slow', 'alice', now(), now() + interval '10 minutes')"
        ),
        {"jti": jti},
    )
    return engine, connection, transaction


def test_resync_catches_a_lower_id_committed_after_a_higher_one(
    make_manager: ManagerFactory, db_url: str
) -> None:
    reader = loaded(make_manager())
    writer = make_manager()
    slow = new_jti()
    engine, connection, transaction = _begin_uncommitted_revocation(db_url, slow)
    try:
        fast = writer.revoke_token(new_jti(), "fast", "bob")  # a higher id, committed first
        reader.load()
        assert reader.is_revoked(fast.jti)
        assert not reader.is_revoked(slow)  # not committed: invisible
        transaction.commit()
    finally:
        connection.close()
        engine.dispose()
    reader.load()  # its id is behind the cursor; the overlap window finds it
    assert reader.is_revoked(slow)


def test_reconciliation_catches_what_a_too_short_window_missed(
    make_manager: ManagerFactory, db_url: str
) -> None:
    reader = loaded(make_manager(overlap_s=0.001))
    writer = make_manager()
    slow = new_jti()
    engine, connection, transaction = _begin_uncommitted_revocation(db_url, slow)
    try:
        writer.revoke_token(new_jti(), "fast", "bob")
        reader.load()
        time.sleep(0.05)  # let the slow row fall out of the 1 ms window
        transaction.commit()
    finally:
        connection.close()
        engine.dispose()
    reader.load()
    assert not reader.is_revoked(slow)  # the window was too short: only the digest can tell
    assert reader.reconcile()
    assert reader.is_revoked(slow)
    assert not reader.reconcile()  # equal digests: nothing to do


def test_reconciliation_drops_purged_records(make_manager: ManagerFactory) -> None:
    manager = make_manager(overlap_s=0.001)
    expired = manager.revoke_token(
        new_jti(), "old", "alice", expires_at=datetime.now(UTC) - timedelta(days=2)
    )
    manager.load()
    assert manager.is_revoked(expired.jti)
    manager.purge(datetime.now(UTC) - timedelta(days=1))
    time.sleep(0.01)  # past the 1 ms overlap window
    assert manager.reconcile()
    assert not manager.is_revoked(expired.jti)
    assert manager.status().revoked_jtis == 0


def test_rules_resync_to_another_manager(make_manager: ManagerFactory) -> None:
    reader = loaded(make_manager())
    writer = make_manager()
    writer.revoke_all(
        subject="agent-3", issued_before=datetime.now(UTC), reason="r", revoked_by="alice"
    )
    old = claims(sub="agent-3", iat=int(time.time()) - 10)
    assert reader.denial(old) is None
    reader.load()
    assert reader.denial(old) is Reason.REVOKED
    assert not reader.reconcile()


@pytest.mark.redis
def test_pubsub_applies_a_revocation_long_before_the_resync(
    make_manager: ManagerFactory, shared_redis_url: str, redis_prefix: str
) -> None:
    redis = {"url": shared_redis_url, "prefix": redis_prefix}
    reader = make_manager(redis=redis, resync_s=60, max_staleness_s=120)
    reader.start()
    wait_for(lambda: reader.ready and reader.status().subscribed, "load and subscription")
    writer = make_manager(redis=redis)
    jti = new_jti()
    writer.revoke_token(jti, "leak", "alice")
    writer.revoke_all(
        tool_name="run_sql", issued_before=datetime.now(UTC), reason="r", revoked_by="alice"
    )
    wait_for(lambda: reader.is_revoked(jti), "the announced jti (resync period is 60 s)")
    wait_for(
        lambda: reader.denial(claims(tool="run_sql", iat=int(time.time()) - 10)),
        "the announced rule",
    )


def test_cut_off_replica_fails_closed_past_the_staleness_bound(
    make_manager: ManagerFactory, proxy: TcpProxy, database_name: str
) -> None:
    manager = make_manager(url=proxy.url_for(database_name), resync_s=0.05, max_staleness_s=0.5)
    manager.start()
    wait_for(lambda: manager.ready, "the first load")
    assert manager.denial(claims()) is None
    proxy.cut()
    wait_for(lambda: not manager.ready, "not ready after the staleness bound")
    assert manager.denial(claims()) is Reason.REVOCATION_STATE_STALE
    status = manager.status()
    assert (status.loaded, status.fresh) == (True, False)
    assert "STALE" in status.detail()
    proxy.restore()
    wait_for(lambda: manager.ready, "ready again once the database answers")
    assert manager.denial(claims()) is None


def test_not_ready_while_the_database_is_unreachable_at_start(
    make_manager: ManagerFactory,
    proxy: TcpProxy,
    database_name: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    proxy.cut()
    manager = make_manager(url=proxy.url_for(database_name), resync_s=0.05)
    caplog.set_level(logging.WARNING, logger="m1.revocation")
    manager.start()
    wait_for(lambda: "revocation first load failed" in caplog.text, "a failed first load")
    assert not manager.ready
    assert manager.denial(claims()) is Reason.REVOCATION_STATE_STALE
    proxy.restore()
    wait_for(lambda: manager.ready, "the first load once the database answers")


def test_announcements_round_trip_and_malformed_ones_are_ignored() -> None:
    rule = RuleEntry("log_agent_run", None, 1_700_000_000.0, 1_700_000_000_000_001)
    assert decode_message(encode_token("abc", 17)) == ("abc", 17)
    assert decode_message(encode_rule(7, rule)) == (7, rule)
    for junk in (b"", b"[]", b'{"jti": 5, "at": 1}', b'{"jti": "a"}', b'{"rule": "7"}', b"\xff"):
        assert decode_message(junk) is None
