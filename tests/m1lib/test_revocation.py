"""RevocationManager in one process: the seed's scenarios, the sync paths, and failure modes.

Everything runs against a PostgreSQL database of this module's own (tables emptied per test) and,
where pub/sub matters, the shared Redis under a test prefix. Database outages go through a TCP
proxy the test cuts; the shared server is never touched.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from m1lib.db.migrate import upgrade
from m1lib.db.session import Database
from m1lib.errors import DatabaseUnavailable, InputError
from m1lib.policy import PolicyEngine, Reason, Scope
from m1lib.revocation import RevocationManager
from m1lib.revocation.state import RevocationState, RuleEntry
from m1lib.revocation.sync import decode_message, encode_rule, encode_token
from m1lib.settings import Settings
from m1lib.tokens import TokenCodec
from tests.m1lib.revocation_proc import (
    PG_SERVER,
    TcpProxy,
    create_database,
    drop_database,
)
from tests.waiting import wait_for

pytestmark = pytest.mark.postgres

ManagerFactory = Callable[..., RevocationManager]
SECRET = "r" * 48


@pytest.fixture(scope="module")
def database_name(pg_url: str) -> Iterator[str]:
    """pg_url only makes the module skip (or fail in CI) without PostgreSQL."""
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
    """Managers on this module's database; closed (and their engines disposed) at teardown."""
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


# -- the seed's scenarios --------------------------------------------------------------------------


def test_revoke_then_check(make_manager: ManagerFactory) -> None:
    manager = loaded(make_manager())
    jti = new_jti()
    record = manager.revoke_token(jti, "leaked in a log", "alice", tool_name="web_search")
    assert record.created
    assert (record.jti, record.tool_name, record.revoked_by) == (jti, "web_search", "alice")
    assert manager.is_revoked(jti)
    assert manager.is_denied(claims(jti))
    assert manager.denial(claims(jti)) is Reason.REVOKED


def test_unknown_jti_is_not_revoked(make_manager: ManagerFactory) -> None:
    manager = loaded(make_manager())
    manager.revoke_token(new_jti(), "other", "alice")
    unknown = claims()
    assert not manager.is_revoked(unknown["jti"])
    assert not manager.is_denied(unknown)
    assert manager.denial(unknown) is None
    assert manager.get_record(unknown["jti"]) is None


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


def test_revocation_list_rejects_a_foreign_cursor(make_manager: ManagerFactory) -> None:
    manager = make_manager()
    for _ in range(3):
        manager.revoke_token(new_jti(), "r", "alice")
    audit_cursor = manager.get_audit_log(limit=1).next_cursor
    assert audit_cursor is not None
    with pytest.raises(InputError, match=r"^cursor: .* is not a cursor of revocations"):
        manager.get_revocation_list(cursor=audit_cursor)
    with pytest.raises(InputError, match=r"^cursor: .* is not a cursor"):
        manager.get_revocation_list(cursor="%%%")
    with pytest.raises(InputError, match=r"^limit: 0 is out of range; allowed: 1-1000"):
        manager.get_revocation_list(limit=0)


def test_credential_compromise_revokes_every_token_of_one_actor(
    make_manager: ManagerFactory,
) -> None:
    manager = loaded(make_manager())
    engine = engine_for(manager)
    calls = [("log_agent_run", Scope.WRITE), ("request_approval", Scope.EXECUTE)] * 2
    stolen = [
        (engine.issue_token(tool, scope, subject="agent-1"), tool, scope) for tool, scope in calls
    ]
    unrelated = engine.issue_token("log_agent_run", Scope.WRITE, subject="agent-2")
    for token, _, _ in stolen:
        jti = engine.codec.decode(token)["jti"]
        manager.revoke_token(jti, "credential compromise", "security-bot")
    for token, tool, scope in stolen:
        decision = engine.verify(token, tool, scope)
        assert (decision.allowed, decision.reason) == (False, Reason.REVOKED)
    assert engine.verify(unrelated, "log_agent_run", Scope.WRITE).allowed
    actors = {entry.actor for entry in manager.get_audit_log().items}
    assert actors == {"security-bot"}


def test_permission_withdrawal_for_one_tool_through_verify(make_manager: ManagerFactory) -> None:
    manager = loaded(make_manager())
    engine = engine_for(manager)
    write = engine.issue_token("log_agent_run", Scope.WRITE, subject="agent-1")
    other = engine.issue_token("request_approval", Scope.EXECUTE, subject="agent-1")
    manager.revoke_all(
        tool_name="log_agent_run",
        issued_before=datetime.now(UTC),
        reason="write access withdrawn",
        revoked_by="alice",
    )
    assert engine.verify(write, "log_agent_run", Scope.WRITE).reason is Reason.REVOKED
    assert engine.verify(other, "request_approval", Scope.EXECUTE).allowed


def test_permission_withdrawal_rule_matches_by_issue_time(make_manager: ManagerFactory) -> None:
    manager = loaded(make_manager())
    before = int(time.time()) - 5
    rule = manager.revoke_all(
        tool_name="send_email",
        issued_before=datetime.now(UTC),
        reason="email tool withdrawn",
        revoked_by="alice",
    )
    assert rule.tool_name == "send_email"
    assert rule.expires_at > rule.issued_before
    assert manager.denial(claims(tool="send_email", iat=before)) is Reason.REVOKED
    assert manager.is_denied(claims(tool="send_email", sub="someone-else", iat=before))
    assert manager.denial(claims(tool="web_search", iat=before)) is None
    assert manager.denial(claims(tool="send_email", iat=time.time() + 5)) is None
    assert not manager.is_revoked(claims(tool="send_email")["jti"])


def test_token_rotation_old_revoked_new_accepted(make_manager: ManagerFactory) -> None:
    manager = loaded(make_manager())
    engine = engine_for(manager)
    old = engine.issue_token("log_agent_run", Scope.WRITE, subject="agent-1")
    manager.revoke_token(
        engine.codec.decode(old)["jti"], "rotated", "alice", tool_name="log_agent_run"
    )
    new = engine.issue_token("log_agent_run", Scope.WRITE, subject="agent-1")
    assert engine.verify(old, "log_agent_run", Scope.WRITE).reason is Reason.REVOKED
    assert engine.verify(new, "log_agent_run", Scope.WRITE, subject="agent-1").allowed


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


def test_purge_refuses_a_cutoff_in_the_future(make_manager: ManagerFactory) -> None:
    manager = make_manager()
    with pytest.raises(InputError, match=r"^older_than: .* is in the future"):
        manager.purge(datetime.now(UTC) + timedelta(hours=1))


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


# -- writes ----------------------------------------------------------------------------------------


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


def test_revoke_checks_its_input(make_manager: ManagerFactory) -> None:
    manager = make_manager()
    with pytest.raises(InputError, match=r"^jti: 0 characters is out of range; allowed: 1-64"):
        manager.revoke_token("", "r", "alice")
    with pytest.raises(InputError, match=r"^jti: 65 characters"):
        manager.revoke_token("x" * 65, "r", "alice")
    with pytest.raises(InputError, match=r"^revoked_by:"):
        manager.revoke_token(new_jti(), "r", " ")
    with pytest.raises(InputError, match=r"^reason: 501 characters"):
        manager.revoke_token(new_jti(), "r" * 501, "alice")
    with pytest.raises(InputError, match=r"^expires_at: .* has no time zone"):
        manager.revoke_token(new_jti(), "r", "alice", expires_at=datetime(2030, 1, 1))
    with pytest.raises(InputError, match=r"^tool_name: a rule needs a tool, a subject or both"):
        manager.revoke_all(issued_before=datetime.now(UTC), reason="r", revoked_by="alice")
    assert manager.get_revocation_list().items == []


@pytest.mark.parametrize(
    ("field", "call"),
    [
        ("jti", lambda m: m.revoke_token("a\x00b", "r", "alice")),
        ("reason", lambda m: m.revoke_token(new_jti(), "why\x00", "alice")),
        ("subject", lambda m: m.revoke_token(new_jti(), "r", "alice", subject="s\x00")),
        ("tool_name", lambda m: m.revoke_token(new_jti(), "r", "alice", tool_name="t\ud800")),
        ("jti", lambda m: m.get_record("a\x00b")),
        (
            "subject",
            lambda m: m.revoke_all(
                subject="a\x00", issued_before=datetime.now(UTC), reason="", revoked_by="alice"
            ),
        ),
    ],
)
def test_text_with_nul_or_surrogate_is_refused_before_the_database(
    make_manager: ManagerFactory, field: str, call: Callable[[RevocationManager], object]
) -> None:
    manager = make_manager()
    with pytest.raises(InputError, match=rf"^{field}: holds a (NUL character|lone surrogate)"):
        call(manager)
    assert manager.get_revocation_list().items == []
    assert manager.get_audit_log().items == []


def test_reason_may_hold_line_breaks(make_manager: ManagerFactory) -> None:
    record = make_manager().revoke_token(new_jti(), "leaked\n\tin a log", "alice")
    assert record.reason == "leaked\n\tin a log"


def test_default_expiry_covers_the_longest_token_lifetime(make_manager: ManagerFactory) -> None:
    manager = make_manager()
    record = manager.revoke_token(new_jti(), "r", "alice")
    lifetime = manager.settings.token.ttl_s + manager.settings.token.leeway_s
    assert record.expires_at - record.revoked_at == timedelta(seconds=lifetime)


# -- the in-memory state ---------------------------------------------------------------------------


def test_rules_match_by_tool_subject_and_issue_time() -> None:
    state = RevocationState(max_staleness_s=10)
    cut = 1_000_000.0
    state.add_rules(
        [
            (1, RuleEntry("send_email", None, cut, 0)),
            (2, RuleEntry(None, "agent-7", cut, 0)),
            (3, RuleEntry("run_sql", "agent-8", cut, 0)),
        ]
    )

    def denied(tool: str, sub: str, iat: Any = cut - 1) -> bool:
        return state.denied_by_rule({"toolName": tool, "sub": sub, "iat": iat})

    assert denied("send_email", "anyone")
    assert not denied("send_email", "anyone", iat=cut)  # issued at the cut: not before it
    assert denied("web_search", "agent-7")
    assert denied("run_sql", "agent-8")
    assert not denied("run_sql", "agent-9")
    assert not denied("web_search", "agent-8")
    assert denied("send_email", "anyone", iat=None)  # cannot prove it is newer
    assert denied("send_email", "anyone", iat="yesterday")
    assert not denied("web_search", "anyone", iat=None)  # no rule could match


def test_denial_tolerates_odd_claim_types(make_manager: ManagerFactory) -> None:
    manager = loaded(make_manager())
    manager.revoke_all(
        tool_name="send_email", issued_before=datetime.now(UTC), reason="r", revoked_by="a"
    )
    odd: dict[str, Any] = {"jti": ["not", "hashable"], "toolName": {"x": 1}, "sub": 5, "iat": 1}
    assert manager.denial(odd) is None
    assert manager.denial({}) is None


# -- readiness and freshness -----------------------------------------------------------------------


def test_not_ready_and_denying_until_the_first_load(make_manager: ManagerFactory) -> None:
    manager = make_manager()
    assert not manager.ready
    assert manager.sync_age_s is None
    assert manager.denial(claims()) is Reason.REVOCATION_STATE_STALE
    manager.load()
    assert manager.ready
    assert manager.denial(claims()) is None
    age = manager.sync_age_s
    assert age is not None
    assert age >= 0


def test_started_manager_loads_in_the_background(make_manager: ManagerFactory) -> None:
    writer = make_manager()
    jti = new_jti()
    writer.revoke_token(jti, "before start", "alice")
    manager = make_manager(resync_s=0.05)
    manager.start()
    wait_for(lambda: manager.ready, "the first load")
    assert manager.denial(claims(jti)) is Reason.REVOKED
    assert manager.status().running


def test_fail_open_accepts_while_stale_but_still_denies_known_revocations(
    make_manager: ManagerFactory,
) -> None:
    manager = make_manager(fail_open=True)
    assert manager.denial(claims()) is None  # nothing loaded, and the operator chose availability
    assert not manager.ready  # ...but not ready before the first load
    jti = new_jti()
    manager.revoke_token(jti, "r", "alice")
    assert manager.denial(claims(jti)) is Reason.REVOKED


def test_disabled_revocation_allows_everything_and_says_so(
    make_manager: ManagerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    manager = make_manager(enabled=False)
    with caplog.at_level(logging.WARNING, logger="m1.revocation"):
        manager.start()
    assert "M1_REVOCATION_ENABLED=false" in caplog.text
    jti = new_jti()
    manager.revoke_token(jti, "still recorded", "alice")
    assert manager.get_record(jti) is not None
    assert manager.denial(claims(jti)) is None
    assert manager.ready
    assert not manager.status().running


# -- sync: resync window, reconciliation, pub/sub ----------------------------------------------------


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


# -- outages -----------------------------------------------------------------------------------------


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


# -- SQLite, the embedded default --------------------------------------------------------------------


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


# -- configuration and the announcement format ------------------------------------------------------


def test_staleness_bound_must_exceed_the_resync_period(
    make_settings: Callable[..., Settings],
) -> None:
    with pytest.raises(ValueError, match=r"M1_REVOCATION_MAX_STALENESS_S .* must be greater"):
        make_settings(revocation={"resync_s": 5, "max_staleness_s": 5})


def test_announcements_round_trip_and_malformed_ones_are_ignored() -> None:
    rule = RuleEntry("log_agent_run", None, 1_700_000_000.0, 1_700_000_000_000_001)
    assert decode_message(encode_token("abc", 17)) == ("abc", 17)
    assert decode_message(encode_rule(7, rule)) == (7, rule)
    for junk in (b"", b"[]", b'{"jti": 5, "at": 1}', b'{"jti": "a"}', b'{"rule": "7"}', b"\xff"):
        assert decode_message(junk) is None
