"""Events recorded outside a replica reach the replicas through Redis: the ingest stream and its
consumer group (exactly one replica takes each batch; a dead one's batches are claimed)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from m1lib.db.session import Database
from m1lib.metrics import MetricsRuntime
from m1lib.metrics.forward import GROUP, RedisForwarder, ingest_stream
from m1lib.redis_conn import make_redis
from m1lib.settings import PROJECT_ROOT, Settings
from tests.m1lib.metrics.conftest import MakeRuntime
from tests.waiting import wait_for

pytestmark = [pytest.mark.redis]

# What a process outside any replica does: import m1lib, record, exit (no flush, no close).
CHILD = """
import sys
from m1lib.metrics import record_event
for i in range(int(sys.argv[2])):
    record_event("error_alerts", level="warning", source=sys.argv[1], message=f"event {i}")
"""


def alerts_from(runtime: MetricsRuntime, source: str) -> int:
    rows = runtime.run_query(
        {
            "metric": "error_alerts",
            "timeRange": "1h",
            "filters": [{"field": "source", "op": "eq", "value": source}],
        }
    ).rows
    return int(rows[0]["count"]) if rows else 0


def run_outside(
    argv: list[str], env: dict[str, str], cwd: Path
) -> subprocess.CompletedProcess[str]:
    """``python <argv>`` in a process outside any replica, its M1_* settings only from ``env``;
    asserts it exited 0."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("M1_")}
    environment.update(env, PYTHONPATH=str(PROJECT_ROOT))
    done = subprocess.run(
        [sys.executable, *argv],
        env=environment,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def record_in_another_process(env: dict[str, str], cwd: Path, source: str, n: int) -> None:
    """Run CHILD with ``env`` and wait for it to exit."""
    run_outside(["-c", CHILD, source, str(n)], env, cwd)


@pytest.fixture
def redis_settings(
    make_settings: Callable[..., Settings], shared_redis_url: str, redis_prefix: str
) -> Callable[..., Settings]:
    def factory(**overrides: Any) -> Settings:
        return make_settings(
            redis={"url": shared_redis_url, "prefix": redis_prefix},
            events={"flush_ms": 5, "persist_s": 3600, **overrides.pop("events", {})},
            **overrides,
        )

    return factory


def test_an_event_recorded_in_another_process_is_found_on_a_replica(
    redis_settings: Callable[..., Settings],
    make_runtime: MakeRuntime,
    shared_redis_url: str,
    redis_prefix: str,
    tmp_path: Path,
) -> None:
    replica = make_runtime(redis_settings(), replica_id="api-a", redis=True)
    env = {"M1_REDIS_URL": shared_redis_url, "M1_REDIS_PREFIX": redis_prefix}
    record_in_another_process(env, tmp_path, "other-process", 3)  # sent at exit
    wait_for(lambda: alerts_from(replica, "other-process"), "the 3 events", until=lambda n: n == 3)
    assert replica.ingest is not None
    assert replica.ingest.taken_events == 3


def test_two_replicas_take_a_forwarded_batch_once_and_persist_it_once(
    redis_settings: Callable[..., Settings], make_runtime: MakeRuntime, pg_database: Database
) -> None:
    settings = redis_settings(database={"url": pg_database.engine.url.render_as_string(False)})
    a = make_runtime(settings, replica_id="api-a", db=pg_database, redis=True)
    b = make_runtime(settings, replica_id="api-b", db=pg_database, redis=True)
    sender = MetricsRuntime(redis_settings(), forwarding=True)
    sender.start()
    try:
        assert isinstance(sender.forwarder, RedisForwarder)
        for i in range(50):
            sender.record_event("error_alerts", level="warning", source="batch", message=f"m{i}")
        assert sender.flush()
    finally:
        sender.close()
    assert sender.drops == {}
    ingest_a, ingest_b = a.ingest, b.ingest
    assert ingest_a is not None
    assert ingest_b is not None
    wait_for(
        lambda: (ingest_a.taken_events, ingest_b.taken_events),
        "one replica to take the 50 events",
        until=lambda taken: sum(taken) == 50,
    )
    for replica in (a, b):  # each sees them once, whichever took them
        wait_for(lambda r=replica: alerts_from(r, "batch"), "50 on each", until=lambda n: n == 50)
    assert a.persist() + b.persist() == 50  # persisted by the replica that took them, once
    client = make_redis(settings)
    assert client is not None
    pending: Any = client.xpending(ingest_stream(settings), GROUP)
    assert pending["pending"] == 0  # acknowledged
    client.close()


def test_a_batch_taken_by_a_replica_that_died_is_claimed_by_another(
    redis_settings: Callable[..., Settings], make_runtime: MakeRuntime
) -> None:
    settings = redis_settings(events={"forward_claim_idle_s": 0.2})
    sender = MetricsRuntime(settings, forwarding=True)
    sender.start()
    sender.record_event("error_alerts", level="critical", source="orphan", message="taken, lost")
    assert sender.flush()
    sender.close()
    client = make_redis(settings)
    assert client is not None
    stream = ingest_stream(settings)
    client.xgroup_create(stream, GROUP, id="0", mkstream=True)
    taken: Any = client.xreadgroup(GROUP, "dead-replica", {stream: ">"}, count=10)
    assert len(taken[0][1]) == 1  # the dead replica took it and never acknowledged it
    survivor = make_runtime(settings, replica_id="api-b", redis=True)
    wait_for(lambda: alerts_from(survivor, "orphan"), "the claimed event", until=lambda n: n == 1)
    wait_for(lambda: client.xpending(stream, GROUP)["pending"], "the ack", until=lambda n: n == 0)
    client.close()


def test_redis_away_the_outbox_is_bounded_and_counted_at_exit(
    make_settings: Callable[..., Settings],
) -> None:
    """Nothing listens there: the sender neither blocks nor grows; what it could not send is
    counted as forward_unavailable once the exit bound passes."""
    settings = make_settings(
        redis={"url": "redis://127.0.0.1:1/0", "prefix": f"m1test:{uuid.uuid4().hex[:6]}"},
        events={"queue_size": 100, "forward_exit_s": 0.2, "flush_ms": 5},
    )
    sender = MetricsRuntime(settings, forwarding=True)
    sender.start()
    for i in range(5):
        sender.record_events(
            [{"metric": "error_alerts", "level": "warning", "source": "s", "message": str(i)}] * 60
        )
        assert sender.recorder.flush()
    assert sender.forwarder is not None
    assert sender.forwarder.queued <= 100  # a batch being sent (the failing try) aside
    wait_for(lambda: sender.drops.get("forward_unavailable", 0), "outbox drops", until=bool)
    sender.close()
    assert sender.drops["forward_unavailable"] == 300  # dropped from the outbox, or at exit
