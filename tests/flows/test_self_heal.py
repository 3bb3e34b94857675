"""self-heal: the pure plan and report, and the flow under Prefect against a real replica.

The replica runs in-process (uvicorn on a thread, its control agent applying commands from the
shared SQLite database); the flow reads its settings from the environment like a flow-run
process. Faults are real: a test-owned redis-server killed and restarted, a memory threshold
forced low, a revocation state left to go stale.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from flows.self_heal import Before, choose_steps, heal_report, self_heal
from m1lib.control import ReplicaAgent
from m1lib.db.models import ControlCommand
from m1lib.errors import InputError
from m1lib.ops import incidents
from m1lib.ops.incidents import IncidentRecord
from m1lib.ops.remediation import BACK_TO_REDIS, StepOutcome, plan
from m1lib.ops.report import COMPONENTS
from m1lib.settings import get_settings
from tests.flow_runs import FlowRun
from tests.m1lib.api.test_stream import Replica, serve  # noqa: F401  # the fixture
from tests.services import OwnRedis
from tests.waiting import wait_for

HEARTBEAT_S = 0.3
# A step whose check keeps failing waits the whole verify window (a passing one stops at once), and
# these tests' faults last for all of it: 1 s instead of the default 15 s only shortens the wait.
VERIFY_S = "1"


# -- pure ---------------------------------------------------------------------------------------


def test_every_component_has_a_plan_and_an_unknown_one_is_named() -> None:
    for component in COMPONENTS:
        assert plan(component)
    assert [s.command for s in plan("redis")] == ["cache.reset_pool", "cache.set_backend"]
    with pytest.raises(InputError, match="allowed: database, redis, api"):
        plan("disk")


def test_a_passing_component_needs_no_step_except_redis_caches_left_on_memory() -> None:
    healthy = Before("healthy", "ok", ["r1"], None)
    assert choose_steps("memory", healthy) == []
    assert choose_steps("redis", healthy) == [BACK_TO_REDIS]
    assert choose_steps("redis", Before("healthy", "ok", [], None)) == []
    assert choose_steps("redis", Before("unhealthy", "down", [], None)) == list(plan("redis"))


def test_report_says_which_step_healed_and_links_the_runbook() -> None:
    outcomes = [
        StepOutcome("reset-redis-pools", "cache.reset_pool", "failed", "unhealthy", "a", "b", 1),
        StepOutcome("cache-to-memory", "cache.set_backend", "mitigated", "unhealthy", "c", "d", 1),
    ]
    report = heal_report("redis", 7, False, Before("unhealthy", "down", [], None), outcomes)
    assert report.result["verdict"] == "mitigated, not healed: the incident stays open"
    assert report.result["healed"] is False
    assert report.artifact_key == "self-heal-redis"
    assert "docs/runbooks/redis.md" in report.description
    assert [row["outcome"] for row in report.table] == ["failed", "mitigated"]
    healed = [
        StepOutcome("resync-revocations", "revocation.resync", "healed", "healthy", "", "", 1)
    ]
    report = heal_report("revocation_sync", None, False, Before("unhealthy", "", [], None), healed)
    assert report.result["verdict"] == "healed by resync-revocations"
    assert report.artifact_key == "self-heal-revocation-sync"


# -- the flow against a live replica -------------------------------------------------------------


@pytest.fixture
def live(
    serve: Callable[..., Replica],  # noqa: F811
    task_settings: Path,
    monkeypatch: pytest.MonkeyPatch,
    own_redis: OwnRedis,
) -> Iterator[Callable[..., Replica]]:
    """A replica with its control agent on ``own_redis``; the flow's environment matches it."""
    agents: list[ReplicaAgent] = []
    flow_env = {
        "M1_REDIS_URL": own_redis.url,
        "M1_REDIS_PREFIX": "m1heal",
        "M1_REPLICA_HEARTBEAT_S": str(HEARTBEAT_S),
        "M1_HEALING_ACK_TIMEOUT_S": "20",
        "M1_HEALING_VERIFY_S": VERIFY_S,
    }

    def start(env: dict[str, str] | None = None, **overrides: Any) -> Replica:
        for name, value in {**flow_env, **(env or {})}.items():
            monkeypatch.setenv(name, value)
        get_settings.cache_clear()
        replica = serve(
            redis={"url": own_redis.url, "prefix": "m1heal", "timeout_s": 0.5},
            replica={"id": "heal-r1", "heartbeat_s": HEARTBEAT_S},
            control={"poll_s": 0.1},
            cache={"probe_s": 0.5},
            **overrides,
        )
        agent = ReplicaAgent(
            replica.runtime.settings,
            db=replica.runtime.db,
            registry=replica.runtime.registry,
            figures=replica.runtime.figures,
        )
        agent.start()
        agents.append(agent)
        wait_for(lambda: agent.running, "the control agent to run")
        return replica

    yield start
    for agent in agents:
        agent.stop()


def open_incident(replica: Replica, component: str) -> int:
    with replica.runtime.db.transaction() as session:
        row = incidents.open_or_current(
            session,
            component,
            kind="consecutive_failures",
            trigger="test",
            started_at=datetime.now(UTC),
            last_check={},
        )
        session.flush()
        return int(row.id)


def incident(replica: Replica, incident_id: int) -> IncidentRecord:
    page = incidents.list_incidents(replica.runtime.db, limit=50)
    return next(item for item in page.items if item.id == incident_id)


def commands(replica: Replica) -> int:
    with replica.runtime.db.transaction() as session:
        return int(session.scalar(select(func.count()).select_from(ControlCommand)) or 0)


def test_unknown_component_is_a_clear_error(run_flow: Callable[..., FlowRun]) -> None:
    with pytest.raises(InputError, match=r"'disk' is not a component.*allowed: database, redis"):
        run_flow(self_heal, component="disk")


def test_redis_killed_pools_reset_then_memory_then_back_to_redis(
    live: Callable[..., Replica], own_redis: OwnRedis, run_flow: Callable[..., FlowRun]
) -> None:
    replica = live()
    runtime = replica.runtime
    runtime.revocations.start()  # /health/ready needs a fresh revocation state
    incident_id = open_incident(replica, "redis")
    runtime.cache.set("k", "before")
    own_redis.stop()

    run = run_flow(self_heal, component="redis", incident_id=incident_id)
    steps = {row["step"]: row for row in run.result["actions"]}
    assert steps["reset-redis-pools"]["outcome"] == "failed"  # Redis is still dead
    assert steps["cache-to-memory"]["outcome"] == "mitigated"
    assert "heal-r1: cache backend now memory" in steps["cache-to-memory"]["acks"]
    assert run.result["healed"] is False
    assert (runtime.cache.backend, runtime.cache.stats().forced) == ("memory", "memory")
    answer = httpx.get(f"http://127.0.0.1:{replica.port}/health/ready", timeout=10)
    assert answer.status_code == 200, answer.text  # the API keeps answering, on memory
    assert answer.json()["checks"]["cache"]["detail"] == "backend memory"
    recorded = [(a["action"], a["outcome"]) for a in incident(replica, incident_id).actions]
    assert recorded == [("reset-redis-pools", "failed"), ("cache-to-memory", "mitigated")]
    assert "self-heal-redis" in run.artifacts
    assert "mitigated" in run.description("self-heal-redis")

    own_redis.start()
    wait_for(  # the heartbeat still says memory: the pinned cache does not return by itself
        lambda: replica.runtime.figures().cache_backend,
        "the cache to stay pinned",
        until="memory".__eq__,
    )
    again = run_flow(self_heal, component="redis")  # no id given: the open incident is found
    assert again.result["incident_id"] == incident_id
    assert [row["step"] for row in again.result["actions"]] == ["cache-back-to-redis"]
    assert again.result["healed"] is True
    assert (runtime.cache.backend, runtime.cache.stats().forced) == ("redis", None)
    assert runtime.cache.get("k") is None  # the restarted server is empty (no persistence)


def test_memory_relieve_frees_the_bytes_the_replica_cache_held(
    live: Callable[..., Replica], run_flow: Callable[..., FlowRun]
) -> None:
    forced_low = {
        "M1_HEALTH_MEMORY_DEGRADED_PCT": "0.001",
        "M1_HEALTH_MEMORY_UNHEALTHY_PCT": "0.002",
    }
    replica = live(env=forced_low)
    runtime = replica.runtime
    runtime.cache.force_backend("memory")  # the replica's own memory is what pressure is about
    for index in range(300):
        runtime.cache.set(f"k{index}", "v" * 1000)
    held = runtime.cache.stats().memory_bytes
    incident_id = open_incident(replica, "memory")

    run = run_flow(self_heal, component="memory", incident_id=incident_id)
    (step,) = run.result["actions"]
    assert step["step"] == "relieve-memory"
    assert f"freed {held} bytes of cache (300 entries)" in step["acks"]
    assert step["outcome"] == "failed"  # a threshold of 0.002 % no eviction can meet
    assert runtime.cache.stats().memory_bytes == 0
    (recorded,) = incident(replica, incident_id).actions
    assert f"freed {held} bytes" in recorded["detail"]


def test_revocation_resync_is_forced_and_verified_by_the_check(
    live: Callable[..., Replica], run_flow: Callable[..., FlowRun]
) -> None:
    stale_soon = {
        "M1_REVOCATION_RESYNC_S": "0.1",
        "M1_REVOCATION_MAX_STALENESS_S": "1.5",
        "M1_HEALING_VERIFY_S": "10",  # passes as soon as a heartbeat carries the fresh age
    }
    replica = live(env=stale_soon)  # its sync thread is not running: the state goes stale
    incident_id = open_incident(replica, "revocation_sync")
    wait_for(
        lambda: replica.runtime.revocations.sync_age_s,
        "the revocation state to go stale",
        until=lambda age: age is not None and age > 2.5,
    )
    run = run_flow(self_heal, component="revocation_sync", incident_id=incident_id)
    (step,) = run.result["actions"]
    assert step["outcome"] == "healed", step
    assert "revocations fully reloaded" in step["acks"]
    assert run.result["verdict"] == "healed by resync-revocations"


def test_dry_run_shows_the_plan_and_changes_nothing(
    live: Callable[..., Replica], own_redis: OwnRedis, run_flow: Callable[..., FlowRun]
) -> None:
    replica = live()
    incident_id = open_incident(replica, "redis")
    own_redis.stop()
    run = run_flow(self_heal, component="redis", incident_id=incident_id, dry_run=True)
    assert [row["outcome"] for row in run.result["actions"]] == ["planned", "planned"]
    assert run.result["dry_run"] is True
    assert commands(replica) == 0
    assert incident(replica, incident_id).actions == []
    assert replica.runtime.cache.stats().forced is None


def test_the_deployment_the_health_flow_starts_exists_with_these_parameters() -> None:
    from deployments.prefect_yaml import load_deployment_specs

    (spec,) = [s for s in load_deployment_specs() if s.name == "self-heal"]
    assert spec.entrypoint == "flows.self_heal.self_heal"
    assert spec.schedules == []
    assert (spec.concurrency_limit, spec.collision_strategy) == (1, "ENQUEUE")
    assert self_heal.name == "self-heal"
    schema = self_heal.parameters
    assert list(schema.properties) == ["component", "incident_id", "dry_run"]
    assert schema.required == ["component"]


def test_paused_healing_runs_no_step_and_says_who_paused(
    live: Callable[..., Replica], own_redis: OwnRedis, run_flow: Callable[..., FlowRun]
) -> None:
    from m1lib.ops import streaks

    replica = live()
    incident_id = open_incident(replica, "redis")
    streaks.pause(replica.runtime.db, "redis", by="ops-admin", reason="working on it")
    own_redis.stop()
    run = run_flow(self_heal, component="redis", incident_id=incident_id)
    assert run.result["verdict"] == "suppressed: healing is paused"
    assert commands(replica) == 0
    (recorded,) = incident(replica, incident_id).actions
    assert recorded["outcome"] == "suppressed"
    assert "paused by ops-admin" in recorded["detail"]


def test_an_api_replica_that_stopped_answering_is_escalated_with_the_runbook(
    live: Callable[..., Replica], run_flow: Callable[..., FlowRun]
) -> None:
    replica = live()
    incident_id = open_incident(replica, "api")
    replica.stop()  # its HTTP server is gone; its heartbeat goes on: live, not ready
    run = run_flow(self_heal, component="api", incident_id=incident_id)
    (step,) = run.result["actions"]
    assert (step["step"], step["outcome"]) == ("verify-api", "escalated")
    found = incident(replica, incident_id)
    assert found.status == "escalated"
    assert [a["action"] for a in found.actions] == ["verify-api", "escalate"]
    assert "docs/runbooks/api.md" in found.actions[-1]["detail"]
