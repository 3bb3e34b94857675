"""An applied TTL policy reaches every process: two API replicas (by the control command) and a
service (by its periodic refresh), each seen through the TTL its own `cached_call` puts on its
Redis key."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis as redis_lib

from m1lib.control import acks_for
from m1lib.db.session import Database
from m1lib.ops.cost.policy import Proposal, recommend_changes
from m1lib.ops.cost.policy_store import apply_changes, load_policy
from m1lib.redis_conn import key as redis_key
from m1lib.settings import Settings
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parents[4]
POLICY_TTL_S = 600.0


class Processes:
    """The processes of one test; all killed at teardown, whatever happened."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.running: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, arguments: list[str], env: dict[str, str]) -> None:
        log = (self.workdir / f"{name}.log").open("ab")
        command = [sys.executable, "-m", "tests.m1lib.ops.cost.policy_proc", "--name", name]
        self.running[name] = subprocess.Popen(
            command + arguments, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()

    def logs(self) -> dict[str, object]:
        return {
            name: (process.poll(), (self.workdir / f"{name}.log").read_text()[-600:])
            for name, process in self.running.items()
        }

    def stop_all(self) -> None:
        for process in self.running.values():
            process.send_signal(signal.SIGTERM)
        for process in self.running.values():
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    running = Processes(tmp_path)
    try:
        yield running
    finally:
        running.stop_all()


@pytest.mark.postgres
@pytest.mark.redis
def test_an_applied_policy_reaches_two_replicas_and_a_service(
    processes: Processes,
    pg_db: Database,
    make_settings: Callable[..., Settings],
    pg_url: str,
    shared_redis_url: str,
    redis_prefix: str,
    tmp_path: Path,
) -> None:
    settings = make_settings(
        database={"url": pg_url}, redis={"url": shared_redis_url, "prefix": redis_prefix}
    )
    tool = f"weather-{uuid.uuid4().hex[:8]}"
    names = {"replica": [f"r1-{tool}", f"r2-{tool}"], "service": [f"svc-{tool}"]}
    common = ["--tool", tool, "--data-dir", str(tmp_path / "data")]
    for name in names["replica"]:
        replica = ["--role", "replica", "--db-url", pg_url, "--redis-url", shared_redis_url]
        processes.start(name, [*replica, "--redis-prefix", redis_prefix, *common], dict(os.environ))
    service_env = dict(
        os.environ,
        M1_DATABASE_URL=pg_url,
        M1_REDIS_URL=shared_redis_url,
        M1_REDIS_PREFIX=redis_prefix,
        M1_DATA_DIR=str(tmp_path / "service"),
        M1_CACHE_DEFAULT_TTL_S="0.3",
        M1_CACHE_POLICY_REFRESH_S="0.5",
    )
    processes.start(names["service"][0], ["--role", "service", *common], service_env)

    client = redis_lib.Redis.from_url(shared_redis_url)
    entry = {
        name: redis_key(settings, "cache", f"tool:{len(tool)}:{tool}:k-{name}")
        for group in names.values()
        for name in group
    }

    def ttls_ms() -> dict[str, int]:
        return {name: int(client.pttl(key)) for name, key in entry.items()}

    try:
        # every process caches with the default TTL (0.3 s) before the policy exists
        wait_for(
            ttls_ms,
            "each process to cache its key with the default TTL",
            until=lambda found: all(0 < ms <= 300 for ms in found.values()),
            show=lambda found: (found, processes.logs()),
        )
        changes = recommend_changes(
            load_policy(pg_db),
            [Proposal(tool, ttl_s=POLICY_TTL_S, staleness_budget_s=900.0, reason="test")],
        )
        applied = apply_changes(pg_db, settings, changes, actor="test", dry_run=False)
        assert applied.command_id is not None
        found = wait_for(
            ttls_ms,
            "each process to cache its key with the policy's TTL",
            until=lambda found: all(ms > 300_000 for ms in found.values()),
            show=lambda found: (found, processes.logs()),
        )
        assert all(ms > POLICY_TTL_S * 1000 - 60_000 for ms in found.values())
        acks = wait_for(
            lambda: acks_for(pg_db, applied.command_id or 0),
            "both replicas to ack the reload",
            until=lambda acks: {a.replica_id for a in acks} >= set(names["replica"]),
        )
        mine = [a for a in acks if a.replica_id in names["replica"]]
        assert all(a.ok and "cache TTL policy loaded" in a.detail for a in mine), mine
    finally:
        client.close()
