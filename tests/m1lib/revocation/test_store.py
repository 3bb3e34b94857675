"""The database side of revocation: records, audit, listings and purge, on PostgreSQL and SQLite."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from m1lib.db.migrate import upgrade
from m1lib.db.session import Database
from m1lib.errors import DatabaseUnavailable
from m1lib.policy import Reason
from m1lib.revocation import RevocationManager
from m1lib.settings import Settings
from tests.m1lib.revocation.conftest import (
    ManagerFactory,
    claims,
    loaded,
    new_jti,
)
from tests.services import TcpProxy

pytestmark = pytest.mark.postgres


def test_revocation_list_filters_by_tool_and_pages(make_manager: ManagerFactory) -> None:
    manager = make_manager()
    search = [
        manager.revoke_token(new_jti(), "r", "alice", tool_name="web_search") for _ in range(5)
    ]
    manager.revoke_token(new_jti(), "r", "alice", tool_name="send_email")
    first = manager.get_revocation_list("web_search", limit=3)
    assert [r.jti for r in first.items] == [r.jti for r in reversed(search)][:3]
    assert first.next_cursor is not None
    second = manager.get_revocation_list("web_search", cursor=first.next_cursor, limit=3)
    assert [r.jti for r in second.items] == [search[1].jti, search[0].jti]
    assert second.next_cursor is None
    assert {r.tool_name for r in manager.get_revocation_list(limit=100).items} == {
        "web_search",
        "send_email",
    }


def test_purge_removes_only_long_expired_records(make_manager: ManagerFactory) -> None:
    manager = make_manager()
    now = datetime.now(UTC)
    long_gone = manager.revoke_token(
        new_jti(), "old", "alice", tool_name="web_search", expires_at=now - timedelta(days=3)
    )
    recent = manager.revoke_token(
        new_jti(), "recent", "alice", tool_name="web_search", expires_at=now - timedelta(hours=1)
    )
    live = manager.revoke_token(new_jti(), "live", "alice", tool_name="send_email")
    old_rule = manager.revoke_all(
        tool_name="web_search",
        issued_before=now - timedelta(days=3),
        reason="old",
        revoked_by="alice",
    )
    live_rule = manager.revoke_all(
        subject="agent-9", issued_before=now, reason="live", revoked_by="alice"
    )
    preview = manager.purge(now - timedelta(days=1), dry_run=True)
    assert (preview.tokens, preview.rules) == (1, 1)
    assert manager.get_record(long_gone.jti) is not None  # a dry run deletes nothing

    assert manager.purge_long_expired_tokens(now - timedelta(days=1)) == 1
    assert manager.get_record(long_gone.jti) is None
    assert manager.get_record(recent.jti) is not None
    assert manager.get_record(live.jti) is not None
    assert [r.id for r in manager.get_rules(include_expired=True)] == [live_rule.id]
    assert old_rule.id not in [r.id for r in manager.get_rules(include_expired=True)]
    purge = manager.get_audit_log(limit=1).items[0]
    assert (purge.action, purge.actor) == ("purge", "m1:purge")
    assert (purge.detail["tokens"], purge.detail["rules"]) == (1, 1)
    assert purge.detail["tokensByTool"] == {"web_search": 1}


def test_audit_names_the_actor_of_every_attempt(make_manager: ManagerFactory) -> None:
    manager = make_manager()
    jti = new_jti()
    manager.revoke_token(jti, "first", "alice", tool_name="web_search")
    again = manager.revoke_token(jti, "second", "bob")
    assert not again.created
    assert (again.revoked_by, again.reason) == ("alice", "first")  # first record kept
    entries = manager.get_audit_log().items
    assert [(e.action, e.actor, e.reason, e.jti) for e in entries] == [
        ("revoke_repeat", "bob", "second", jti),
        ("revoke", "alice", "first", jti),
    ]
    assert entries[0].detail["firstRevokedBy"] == "alice"
    assert entries[0].tool_name == "web_search"


def test_concurrent_revokes_of_one_jti_keep_one_record_and_audit_each(
    make_manager: ManagerFactory,
) -> None:
    manager = make_manager()
    jti = new_jti()
    results: list[bool] = []

    def revoke(actor: str) -> None:
        results.append(manager.revoke_token(jti, "race", actor).created)

    threads = [threading.Thread(target=revoke, args=(f"actor-{n}",)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(results) == [False] * 5 + [True]
    assert len(manager.get_revocation_list().items) == 1
    assert len(manager.get_audit_log().items) == 6


def test_database_unreachable_during_revoke_raises_and_claims_nothing(
    make_manager: ManagerFactory, proxy: TcpProxy, database_name: str
) -> None:
    manager = loaded(make_manager(url=proxy.url_for(database_name)))
    observer = make_manager()
    proxy.cut()
    jti = new_jti()
    with pytest.raises(DatabaseUnavailable, match="unavailable") as raised:
        manager.revoke_token(jti, "leak", "alice")
    assert raised.value.retry_after_s >= 1
    assert not manager.is_revoked(jti)
    assert observer.get_record(jti) is None
    assert observer.get_audit_log().items == []
    proxy.restore()
    manager.revoke_token(jti, "leak", "alice")  # the same call works once the database is back
    assert manager.is_revoked(jti)


def test_manager_works_on_sqlite(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(revocation={"overlap_s": 0.001})
    db = Database(settings)
    upgrade(db)
    manager = RevocationManager(settings=settings, db=db)
    try:
        manager.load()
        jti = new_jti()
        manager.revoke_token(jti, "r", "alice", tool_name="web_search")
        assert manager.revoke_token(jti, "again", "bob").created is False
        manager.revoke_all(
            tool_name="send_email", issued_before=datetime.now(UTC), reason="r", revoked_by="a"
        )
        other = RevocationManager(settings=settings, db=db)
        other.load()
        assert other.denial(claims(jti)) is Reason.REVOKED
        assert other.denial(claims(tool="send_email", iat=int(time.time()) - 5)) is Reason.REVOKED
        time.sleep(0.01)
        assert not other.reconcile()
        assert [r.jti for r in other.get_revocation_list("web_search").items] == [jti]
        assert other.purge(datetime.now(UTC), dry_run=True).tokens == 0
        other.close()
    finally:
        manager.close()
        db.dispose()
