"""The control channel: commands written once, applied and acked by every replica they target."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from m1lib.control import (
    CommandAck,
    CommandRegistry,
    ReplicaAgent,
    ReplicaFigures,
    acks_for,
    control_channel,
    issue_command,
    live_replicas,
)
from m1lib.db.migrate import upgrade
from m1lib.db.models import ControlCommand, Replica
from m1lib.db.session import Database
from m1lib.errors import InputError, UsageError
from m1lib.settings import Settings
from tests.conftest import subscribers
from tests.services import OwnRedis
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def ack_of(db: Database, command_id: int, replica_id: str) -> CommandAck | None:
    return next((a for a in acks_for(db, command_id) if a.replica_id == replica_id), None)


class Recorder:
    """A registry with ``test.record`` that remembers the args it was applied with."""

    def __init__(self) -> None:
        self.registry = CommandRegistry()
        self.calls: list[dict[str, Any]] = []
        self.registry.register("test.record", self.record)

    def record(self, args: dict[str, Any]) -> str:
        self.calls.append(args)
        return f"recorded {args.get('token', '')}"

    def tokens(self) -> list[Any]:
        return [call.get("token") for call in self.calls]


@pytest.fixture
def sqlite_settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(control={"poll_s": 0.05}, replica={"id": "r-local", "heartbeat_s": 0.05})


@pytest.fixture
def sqlite_db(sqlite_settings: Settings) -> Iterator[Database]:
    db = Database(sqlite_settings)
    upgrade(db)
    yield db
    db.dispose()


@pytest.fixture
def agents() -> Iterator[list[ReplicaAgent]]:
    """Agents a test starts; all stopped at teardown, whatever happened."""
    started: list[ReplicaAgent] = []
    yield started
    for agent in started:
        agent.stop()


def make_agent(
    base: Settings,
    db: Database,
    registry: CommandRegistry,
    replica_id: str,
    figures: Callable[[], ReplicaFigures] = ReplicaFigures,
    **overrides: Any,
) -> ReplicaAgent:
    replica = {"id": replica_id, "heartbeat_s": base.replica.heartbeat_s}
    settings = base.model_copy(
        update={"replica": base.replica.model_copy(update=replica), **overrides}
    )
    return ReplicaAgent(settings, db=db, registry=registry, figures=figures)


# -- registry ------------------------------------------------------------------------------------


def test_registry_registers_by_call_and_by_decorator() -> None:
    registry = CommandRegistry()

    def evict(args: dict[str, Any]) -> str:
        return f"evicted {args['prefix']}"

    assert registry.register("cache.evict", evict) is evict

    @registry.register("policy.reload")
    def reload(_args: dict[str, Any]) -> str:
        return "reloaded"

    assert registry.names() == ["cache.evict", "policy.reload"]
    assert "cache.evict" in registry
    assert registry.get("policy.reload") is reload
    assert registry.apply("cache.evict", {"prefix": "tool:"}) == (True, "evicted tool:")


def test_registry_rejects_a_second_handler_for_a_name() -> None:
    registry = CommandRegistry()
    registry.register("cache.evict", lambda _args: "a")
    with pytest.raises(UsageError, match=r'"cache.evict" already has a handler'):
        registry.register("cache.evict", lambda _args: "b")


def test_registry_rejects_bad_names() -> None:
    with pytest.raises(InputError, match="not a command name"):
        CommandRegistry().register("", lambda _args: "")
    with pytest.raises(InputError, match="not a command name"):
        CommandRegistry().register("x" * 65, lambda _args: "")


def test_registry_apply_reports_unknown_names_and_handler_errors() -> None:
    registry = CommandRegistry()

    @registry.register("boom")
    def boom(_args: dict[str, Any]) -> str:
        raise ValueError("no such cache")

    assert registry.apply("boom", {}) == (False, "ValueError: no such cache")
    ok, detail = registry.apply("nope", {})
    assert not ok
    assert detail == 'command "nope" is not registered on this replica; allowed: boom'


# -- issuing -------------------------------------------------------------------------------------


def test_issue_command_writes_a_versioned_row(
    sqlite_settings: Settings, sqlite_db: Database
) -> None:
    first = issue_command(
        sqlite_db, "cache.evict", {"prefix": "a"}, created_by="t", settings=sqlite_settings
    )
    second = issue_command(
        sqlite_db,
        "cache.evict",
        None,
        created_by="t",
        target="r9",
        ttl_s=60,
        settings=sqlite_settings,
    )
    assert second > first
    with sqlite_db.transaction() as session:
        row = session.get(ControlCommand, second)
        assert row is not None
        assert (row.name, row.args, row.target, row.created_by) == ("cache.evict", {}, "r9", "t")
        lifetime = row.expires_at - row.created_at
    assert lifetime == timedelta(seconds=60)


def test_issue_command_rejects_bad_input(sqlite_settings: Settings, sqlite_db: Database) -> None:
    with pytest.raises(InputError, match=r"^name:"):
        issue_command(sqlite_db, " x", {}, created_by="t", settings=sqlite_settings)
    with pytest.raises(InputError, match=r"^ttl_s:"):
        issue_command(sqlite_db, "x", {}, created_by="t", ttl_s=0, settings=sqlite_settings)
    with pytest.raises(InputError, match=r"^target:"):
        issue_command(sqlite_db, "x", {}, created_by="t", target="", settings=sqlite_settings)


def _command_count(db: Database) -> int:
    with db.transaction() as session:
        return len(session.query(ControlCommand).all())


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
@pytest.mark.parametrize(
    ("field", "inputs"),
    [
        ("name", {"name": "cache\x00evict"}),
        ("target", {"target": "r\x00"}),
        ("created_by", {"created_by": "ops\x00"}),
        ("args.keys[1]", {"args": {"keys": ["a", "b\x00"]}}),
        ("args.nested.text", {"args": {"nested": {"text": "\ud800"}}}),
    ],
)
def test_issue_command_refuses_nul_and_surrogates_before_the_database(
    request: pytest.FixtureRequest, backend: str, field: str, inputs: dict[str, Any]
) -> None:
    db: Database = request.getfixturevalue(f"{'pg' if backend == 'postgres' else 'sqlite'}_db")
    before = _command_count(db)  # the PostgreSQL database is the whole run's
    call: dict[str, Any] = {"name": "x", "args": {}, "created_by": "t", **inputs}
    with pytest.raises(InputError) as raised:
        issue_command(db, call.pop("name"), call.pop("args"), settings=db.settings, **call)
    assert raised.value.path == field
    assert _command_count(db) == before


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        ({"blob": "x" * (64 * 1024)}, "larger than 65536 bytes"),
        ({"many": ["é"] * 15_000}, "bytes as JSON is larger than 65536"),
        ({"n": 2**63}, "outside the 64-bit range"),
        ({"n": float("nan")}, "not a finite number"),
        ({"set": {1}}, "set is not a JSON value"),
    ],
)
def test_issue_command_bounds_args(
    sqlite_settings: Settings, sqlite_db: Database, args: dict[str, Any], problem: str
) -> None:
    with pytest.raises(InputError, match=problem):
        issue_command(sqlite_db, "x", args, created_by="t", settings=sqlite_settings)
    assert _command_count(sqlite_db) == 0


def test_issue_command_refuses_args_nested_deeper_than_the_limit(
    sqlite_settings: Settings, sqlite_db: Database
) -> None:
    deep: Any = "leaf"
    for _ in range(1000):
        deep = [deep]
    with pytest.raises(InputError, match="nested deeper than 16 levels") as raised:
        issue_command(sqlite_db, "x", {"deep": deep}, created_by="t", settings=sqlite_settings)
    assert raised.value.path == "args.deep" + "[0]" * 15


@pytest.mark.parametrize("ttl_s", [float("nan"), float("inf"), 1e300, -1])
def test_issue_command_refuses_a_lifetime_that_is_not_one(
    sqlite_settings: Settings, sqlite_db: Database, ttl_s: float
) -> None:
    with pytest.raises(InputError, match=r"^ttl_s:"):
        issue_command(sqlite_db, "x", {}, created_by="t", ttl_s=ttl_s, settings=sqlite_settings)


def test_issue_command_only_logs_a_failed_publish(
    make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(redis={"url": "redis://127.0.0.1:1/0", "timeout_s": 0.2})
    db = Database(settings)
    upgrade(db)
    with caplog.at_level(logging.WARNING, logger="m1.control"):
        command_id = issue_command(db, "cache.evict", {}, created_by="t", settings=settings)
    db.dispose()
    assert command_id >= 1
    assert f"nudge for command {command_id} not published" in caplog.text


# -- applying, in process ------------------------------------------------------------------------


def test_agent_applies_and_acks_a_command_on_sqlite(
    sqlite_settings: Settings, sqlite_db: Database, agents: list[ReplicaAgent]
) -> None:
    recorders = [Recorder(), Recorder()]
    for index, recorder in enumerate(recorders):
        agents.append(make_agent(sqlite_settings, sqlite_db, recorder.registry, f"r{index}"))
        agents[-1].start()
    command_id = issue_command(
        sqlite_db, "test.record", {"token": "t1"}, created_by="test", settings=sqlite_settings
    )
    acks = wait_for(
        lambda: len(acks_for(sqlite_db, command_id)) == 2 and acks_for(sqlite_db, command_id),
        "two acks",
    )
    assert [(a.replica_id, a.ok, a.detail) for a in acks] == [
        ("r0", True, "recorded t1"),
        ("r1", True, "recorded t1"),
    ]
    assert all(a.applied_at.tzinfo is not None for a in acks)
    assert [r.tokens() for r in recorders] == [["t1"], ["t1"]]
    assert [(a.applied_count, a.last_applied_id) for a in agents] == [(1, command_id)] * 2


def test_agent_applies_and_acks_a_command_on_postgres(
    make_settings: Callable[..., Settings], pg_url: str, pg_db: Database, agents: list[ReplicaAgent]
) -> None:
    settings = make_settings(database={"url": pg_url}, control={"poll_s": 0.05})
    recorder = Recorder()
    replica_id = unique("pg")
    agents.append(make_agent(settings, pg_db, recorder.registry, replica_id))
    agents[0].start()
    token = unique("token")
    command_id = issue_command(
        pg_db, "test.record", {"token": token}, created_by="test", settings=settings
    )
    ack = wait_for(lambda: ack_of(pg_db, command_id, replica_id), "the ack")
    assert (ack.ok, ack.detail) == (True, f"recorded {token}")
    assert token in recorder.tokens()
    # The agent counts what it applied on PostgreSQL too (its heartbeat reports it).
    wait_for(lambda: agents[0].last_applied_id == command_id or None, "the applied id")
    assert agents[0].applied_count >= 1


def test_agent_applies_each_command_once(sqlite_settings: Settings, sqlite_db: Database) -> None:
    recorder = Recorder()
    agent = make_agent(sqlite_settings, sqlite_db, recorder.registry, "r-once")
    ids = [
        issue_command(
            sqlite_db, "test.record", {"token": n}, created_by="t", settings=sqlite_settings
        )
        for n in range(3)
    ]
    assert agent.apply_pending() == 3
    assert agent.apply_pending() == 0
    assert recorder.tokens() == [0, 1, 2]
    assert agent.last_applied_id == ids[-1]


def test_unknown_command_is_acked_not_ok(sqlite_settings: Settings, sqlite_db: Database) -> None:
    agent = make_agent(sqlite_settings, sqlite_db, Recorder().registry, "r-unknown")
    command_id = issue_command(
        sqlite_db, "cache.nope", {}, created_by="t", settings=sqlite_settings
    )
    agent.apply_pending()
    ack = ack_of(sqlite_db, command_id, "r-unknown")
    assert ack is not None
    assert not ack.ok
    assert ack.detail == (
        'command "cache.nope" is not registered on this replica; allowed: test.record'
    )


def test_handler_exception_is_acked_not_ok_and_next_command_still_applies(
    sqlite_settings: Settings, sqlite_db: Database
) -> None:
    recorder = Recorder()

    @recorder.registry.register("test.fail")
    def fail(_args: dict[str, Any]) -> str:
        raise RuntimeError("backend refused")

    agent = make_agent(sqlite_settings, sqlite_db, recorder.registry, "r-fail")
    failing = issue_command(sqlite_db, "test.fail", {}, created_by="t", settings=sqlite_settings)
    after = issue_command(
        sqlite_db, "test.record", {"token": "next"}, created_by="t", settings=sqlite_settings
    )
    assert agent.apply_pending() == 2
    failed = ack_of(sqlite_db, failing, "r-fail")
    assert failed is not None
    assert (failed.ok, failed.detail) == (False, "RuntimeError: backend refused")
    applied = ack_of(sqlite_db, after, "r-fail")
    assert applied is not None
    assert applied.ok


def test_expired_command_is_skipped(sqlite_settings: Settings, sqlite_db: Database) -> None:
    recorder = Recorder()
    agent = make_agent(sqlite_settings, sqlite_db, recorder.registry, "r-late")
    now = datetime.now(UTC)
    with sqlite_db.transaction() as session:
        expired = ControlCommand(
            name="test.record",
            args={"token": "old"},
            target=None,
            created_by="t",
            created_at=now - timedelta(hours=2),
            expires_at=now - timedelta(seconds=1),
        )
        session.add(expired)
        session.flush()
        expired_id = expired.id
    fresh = issue_command(
        sqlite_db, "test.record", {"token": "new"}, created_by="t", settings=sqlite_settings
    )
    assert agent.apply_pending() == 1
    assert recorder.tokens() == ["new"]
    assert acks_for(sqlite_db, expired_id) == []
    assert ack_of(sqlite_db, fresh, "r-late") is not None


def test_targeted_command_applies_only_to_its_target(
    sqlite_settings: Settings, sqlite_db: Database
) -> None:
    chosen, other = Recorder(), Recorder()
    agent_chosen = make_agent(sqlite_settings, sqlite_db, chosen.registry, "r-chosen")
    agent_other = make_agent(sqlite_settings, sqlite_db, other.registry, "r-other")
    command_id = issue_command(
        sqlite_db,
        "test.record",
        {"token": "only"},
        created_by="t",
        target="r-chosen",
        settings=sqlite_settings,
    )
    agent_other.apply_pending()
    agent_chosen.apply_pending()
    assert (chosen.tokens(), other.tokens()) == (["only"], [])
    assert [a.replica_id for a in acks_for(sqlite_db, command_id)] == ["r-chosen"]


def test_lower_id_committed_after_a_higher_one_is_still_applied(
    sqlite_settings: Settings, sqlite_db: Database
) -> None:
    """Ids are handed out before commit: an id cursor would skip id 5 here, NOT EXISTS does not."""
    recorder = Recorder()
    agent = make_agent(sqlite_settings, sqlite_db, recorder.registry, "r-order")
    now = datetime.now(UTC)

    def write(command_id: int, token: str) -> None:
        with sqlite_db.transaction() as session:
            session.add(
                ControlCommand(
                    id=command_id,
                    name="test.record",
                    args={"token": token},
                    target=None,
                    created_by="t",
                    created_at=now,
                    expires_at=now + timedelta(hours=1),
                )
            )

    write(10, "high")
    agent.apply_pending()
    write(5, "low")
    agent.apply_pending()
    assert recorder.tokens() == ["high", "low"]


def test_ack_is_written_once_when_two_threads_apply_for_one_replica(
    sqlite_settings: Settings, sqlite_db: Database
) -> None:
    recorder = Recorder()
    twins = [make_agent(sqlite_settings, sqlite_db, recorder.registry, "r-twin") for _ in range(2)]
    ids = [
        issue_command(
            sqlite_db, "test.record", {"token": n}, created_by="t", settings=sqlite_settings
        )
        for n in range(20)
    ]
    threads = [threading.Thread(target=twin.apply_pending) for twin in twins]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sum(twin.applied_count for twin in twins) == len(ids)
    assert all(len(acks_for(sqlite_db, command_id)) == 1 for command_id in ids)


def test_agent_survives_a_database_that_is_not_ready_yet(
    make_settings: Callable[..., Settings],
    agents: list[ReplicaAgent],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """No tables at first (every statement fails); once migrated, the same threads carry on."""
    settings = make_settings(
        control={"poll_s": 0.05}, replica={"id": "r-early", "heartbeat_s": 0.05}
    )
    db = Database(settings)
    recorder = Recorder()
    agents.append(ReplicaAgent(settings, db=db, registry=recorder.registry, figures=ReplicaFigures))
    caplog.set_level(logging.WARNING, logger="m1.control")
    agents[0].start()
    failures = ("heartbeat of r-early failed", "control poll of r-early failed")
    wait_for(lambda: all(f in caplog.text for f in failures), "a failed heartbeat and poll")
    upgrade(db)
    command_id = issue_command(
        db, "test.record", {"token": "late"}, created_by="t", settings=settings
    )
    wait_for(lambda: ack_of(db, command_id, "r-early"), "the ack after migration")
    wait_for(lambda: [r.id for r in live_replicas(db, 60)] == ["r-early"], "the heartbeat")
    agents[0].stop()
    db.dispose()


def test_start_and_stop_are_idempotent(sqlite_settings: Settings, sqlite_db: Database) -> None:
    agent = make_agent(sqlite_settings, sqlite_db, Recorder().registry, "r-idem")
    agent.stop()
    agent.start()
    threads = {t.name for t in threading.enumerate() if t.name.startswith("m1-control-")}
    agent.start()
    assert {t.name for t in threading.enumerate() if t.name.startswith("m1-control-")} == threads
    agent.stop()
    agent.stop()
    assert not agent.running
    assert not [t for t in threading.enumerate() if t.name.startswith("m1-control-")]


# -- heartbeat -----------------------------------------------------------------------------------


def test_heartbeat_writes_and_refreshes_the_replica_row_with_figures(
    sqlite_settings: Settings, sqlite_db: Database, agents: list[ReplicaAgent]
) -> None:
    drops = iter(range(1_000_000))

    def figures() -> ReplicaFigures:
        return ReplicaFigures(
            cache_backend="redis",
            revocation_sync_age_s=0.5,
            store_lag_s=1.5,
            rss_bytes=123_456,
            queue_drops=next(drops),
        )

    agents.append(make_agent(sqlite_settings, sqlite_db, Recorder().registry, "r-beat", figures))
    agents[0].start()
    first = wait_for(lambda: live_replicas(sqlite_db, 60), "the first heartbeat")[0]
    assert first.id == "r-beat"
    assert first.base_url == sqlite_settings.api_base_url
    assert first.pid == os.getpid()
    assert (
        first.cache_backend,
        first.revocation_sync_age_s,
        first.store_lag_s,
        first.rss_bytes,
    ) == (
        "redis",
        0.5,
        1.5,
        123_456,
    )
    later = wait_for(
        lambda: next(
            (r for r in live_replicas(sqlite_db, 60) if r.queue_drops > first.queue_drops), None
        ),
        "a refreshed heartbeat",
    )
    assert later.last_seen > first.last_seen
    assert later.started_at == first.started_at


def test_heartbeat_reports_the_last_applied_command(
    sqlite_settings: Settings, sqlite_db: Database
) -> None:
    agent = make_agent(sqlite_settings, sqlite_db, Recorder().registry, "r-last")
    agent.heartbeat()
    assert live_replicas(sqlite_db, 60)[0].last_command_id is None
    command_id = issue_command(
        sqlite_db, "test.record", {}, created_by="t", settings=sqlite_settings
    )
    agent.apply_pending()
    agent.heartbeat()
    assert live_replicas(sqlite_db, 60)[0].last_command_id == command_id


def test_live_replicas_leaves_out_stale_heartbeats(
    sqlite_settings: Settings, sqlite_db: Database
) -> None:
    make_agent(sqlite_settings, sqlite_db, Recorder().registry, "r-fresh").heartbeat()
    make_agent(sqlite_settings, sqlite_db, Recorder().registry, "r-stale").heartbeat()
    with sqlite_db.transaction() as session:
        stale = session.get(Replica, "r-stale")
        assert stale is not None
        stale.last_seen = datetime.now(UTC) - timedelta(minutes=5)
    assert [r.id for r in live_replicas(sqlite_db, 60)] == ["r-fresh"]


# -- pub/sub -------------------------------------------------------------------------------------


@pytest.mark.redis
def test_pubsub_nudge_wakes_an_agent_long_before_its_poll(
    make_settings: Callable[..., Settings],
    sqlite_db: Database,
    shared_redis_url: str,
    redis_prefix: str,
    agents: list[ReplicaAgent],
) -> None:
    settings = make_settings(
        redis={"url": shared_redis_url, "prefix": redis_prefix}, control={"poll_s": 600}
    )
    agents.append(make_agent(settings, sqlite_db, Recorder().registry, "r-nudged"))
    agents[0].start()
    wait_for(
        lambda: subscribers(shared_redis_url, control_channel(settings)) == 1, "the subscription"
    )
    command_id = issue_command(sqlite_db, "test.record", {}, created_by="t", settings=settings)
    wait_for(lambda: ack_of(sqlite_db, command_id, "r-nudged"), "the ack (poll period is 600 s)")


@pytest.mark.redis
def test_subscriber_reconnects_after_redis_restarts(
    make_settings: Callable[..., Settings],
    sqlite_db: Database,
    own_redis: OwnRedis,
    agents: list[ReplicaAgent],
) -> None:
    settings = make_settings(redis={"url": own_redis.url}, control={"poll_s": 600})
    agents.append(make_agent(settings, sqlite_db, Recorder().registry, "r-reconnect"))
    agents[0].start()
    channel = control_channel(settings)
    wait_for(lambda: subscribers(own_redis.url, channel) == 1, "the first subscription")
    own_redis.stop()
    own_redis.start()
    wait_for(lambda: subscribers(own_redis.url, channel) == 1, "the subscription after the restart")
    command_id = issue_command(sqlite_db, "test.record", {}, created_by="t", settings=settings)
    wait_for(lambda: ack_of(sqlite_db, command_id, "r-reconnect"), "the ack after the restart")


# -- two replica processes on PostgreSQL and Redis -----------------------------------------------


class ReplicaProcesses:
    """Replica processes of one test (tests/m1lib/replica_proc.py); all killed at teardown."""

    def __init__(self, workdir: Path, pg_url: str, redis_url: str, prefix: str) -> None:
        self.workdir = workdir
        self.pg_url = pg_url
        self.redis_url = redis_url
        self.prefix = prefix
        self.running: dict[str, subprocess.Popen[bytes]] = {}

    def out(self, replica_id: str) -> Path:
        return self.workdir / f"{replica_id}.out"

    def start(self, replica_id: str) -> None:
        log = (self.workdir / f"{replica_id}.log").open("ab")
        self.running[replica_id] = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.m1lib.replica_proc",
                "--replica-id",
                replica_id,
                "--db-url",
                self.pg_url,
                "--redis-url",
                self.redis_url,
                "--redis-prefix",
                self.prefix,
                "--data-dir",
                str(self.workdir / "data"),
                "--poll-s",
                "1.0",
                "--heartbeat-s",
                "0.2",
                "--out",
                str(self.out(replica_id)),
            ],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()

    def stop(self, replica_id: str) -> None:
        process = self.running.pop(replica_id)
        process.send_signal(signal.SIGTERM)
        try:
            assert process.wait(20) == 0, self.log(replica_id)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(10)

    def log(self, replica_id: str) -> str:
        return (self.workdir / f"{replica_id}.log").read_text(errors="replace")

    def state(self, db: Database, command_id: int) -> dict[str, Any]:
        """What a failed wait reports: acks so far, each replica's heartbeat and process."""
        heartbeats = {r.id: r for r in live_replicas(db, 3600)}
        return {
            "acks": [(a.replica_id, a.ok, a.detail) for a in acks_for(db, command_id)],
            "replicas": {
                rid: {
                    "exit_code": process.poll(),
                    "last_seen": getattr(heartbeats.get(rid), "last_seen", None),
                    "last_command_id": getattr(heartbeats.get(rid), "last_command_id", None),
                    "log_tail": self.log(rid)[-400:],
                }
                for rid, process in self.running.items()
            },
        }

    def kill_all(self) -> None:
        for process in self.running.values():
            process.kill()
            process.wait(10)
        self.running.clear()


@pytest.fixture
def replica_processes(
    tmp_path: Path, pg_url: str, pg_db: Database, shared_redis_url: str, redis_prefix: str
) -> Iterator[ReplicaProcesses]:
    processes = ReplicaProcesses(tmp_path, pg_url, shared_redis_url, redis_prefix)
    try:
        yield processes
    finally:
        processes.kill_all()


def wait_until_live(db: Database, processes: ReplicaProcesses, *replica_ids: str) -> None:
    """Live: a heartbeat from the process we started (its pid), not from an earlier run."""

    def live() -> bool:
        for replica_id in replica_ids:
            process = processes.running[replica_id]
            assert process.poll() is None, processes.log(replica_id)
        pids = {r.id: r.pid for r in live_replicas(db, 60)}
        return all(pids.get(rid) == processes.running[rid].pid for rid in replica_ids)

    wait_for(live, f"heartbeats of {', '.join(replica_ids)}")


@pytest.mark.postgres
@pytest.mark.redis
def test_two_replica_processes_apply_and_ack_one_command(
    replica_processes: ReplicaProcesses,
    pg_db: Database,
    make_settings: Callable[..., Settings],
    pg_url: str,
    shared_redis_url: str,
    redis_prefix: str,
) -> None:
    settings = make_settings(
        database={"url": pg_url}, redis={"url": shared_redis_url, "prefix": redis_prefix}
    )
    ids = [unique("proc-a"), unique("proc-b")]
    for replica_id in ids:
        replica_processes.start(replica_id)
    wait_until_live(pg_db, replica_processes, *ids)
    token = unique("token")
    command_id = issue_command(
        pg_db, "test.record", {"token": token}, created_by="test", settings=settings
    )
    acks = wait_for(
        lambda: acks_for(pg_db, command_id),
        f"acks of command {command_id} by both processes",
        until=lambda found: {a.replica_id for a in found} >= set(ids),
        show=lambda _: replica_processes.state(pg_db, command_id),
    )
    pids = {rid: replica_processes.running[rid].pid for rid in ids}
    assert {(a.replica_id, a.ok, a.detail) for a in acks} == {
        (rid, True, f"pid={pid}") for rid, pid in pids.items()
    }
    for replica_id in ids:
        assert token in replica_processes.out(replica_id).read_text().split()


@pytest.mark.postgres
@pytest.mark.redis
def test_restarted_replica_process_applies_the_command_it_missed(
    replica_processes: ReplicaProcesses,
    pg_db: Database,
    make_settings: Callable[..., Settings],
    pg_url: str,
    shared_redis_url: str,
    redis_prefix: str,
) -> None:
    settings = make_settings(
        database={"url": pg_url}, redis={"url": shared_redis_url, "prefix": redis_prefix}
    )
    live_id, down_id = unique("proc-live"), unique("proc-down")
    replica_processes.start(live_id)
    replica_processes.start(down_id)
    wait_until_live(pg_db, replica_processes, live_id, down_id)
    replica_processes.stop(down_id)

    token = unique("missed")
    command_id = issue_command(
        pg_db, "test.record", {"token": token}, created_by="test", settings=settings
    )
    live_ack = wait_for(lambda: ack_of(pg_db, command_id, live_id), "the live replica's ack")
    assert live_ack.ok
    assert ack_of(pg_db, command_id, down_id) is None

    replica_processes.start(down_id)
    down_ack = wait_for(lambda: ack_of(pg_db, command_id, down_id), "the restarted replica's ack")
    assert (down_ack.ok, down_ack.detail) == (True, f"pid={replica_processes.running[down_id].pid}")
    assert token in replica_processes.out(down_id).read_text().split()
