"""Killing Redis under a running `m1 up` is noticed, healed and recorded without a person.

Its own `m1 up` (a PostgreSQL database and a redis-server of the test's own, which it kills and
restarts on the same port), never the shared one. The health deployment runs on its real schedule
every 20 s (the least that leaves a flow run room here) and heals at the 2nd consecutive failure
(``M1_HEALING_THRESHOLD=2``, not the default 3: one period less keeps this test near 80 s instead of
100 s; the 3-in-a-row rule itself is tested on the flow functions in tests/flows). A self-heal
step verifies for 5 s (``M1_HEALING_VERIFY_S``) instead of 15 s, for the same reason.

The chain: scheduled health runs see Redis unhealthy; the 2nd starts a real `self-heal` flow run
for redis (seen through the Prefect API), which resets the pools, pins the cache to memory and
completes; the API keeps answering; the incident records the steps. Redis restarted: the next
passing check resolves the incident and, the cache still being pinned, starts self-heal again,
which moves it back to Redis. The figures measured are printed (``-s`` shows them).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from prefect.client.schemas.filters import FlowFilter, FlowFilterName
from prefect.client.schemas.objects import FlowRun

from deployments.prefect_api import prefect_client
from tests.conftest import OwnRedis
from tests.e2e.live import LiveM1
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e

PERIOD_S = 20
THRESHOLD = 2
HEAL_DEADLINE_S = 300  # detection (THRESHOLD periods) + a queued run on a busy machine
RUN_DEADLINE_S = 240


@pytest.fixture
def healing_m1(tmp_path: Path, fresh_pg_url: str, own_redis: OwnRedis) -> Iterator[LiveM1]:
    live = LiveM1(
        workdir=tmp_path / "heal-redis",
        database_url=fresh_pg_url,
        redis_url=own_redis.url,
        extra_settings={
            "M1_HEALTH_PERIOD_S": str(PERIOD_S),
            "M1_HEALING_THRESHOLD": str(THRESHOLD),
            "M1_HEALING_VERIFY_S": "5",
        },
    )
    try:
        live.start()
        yield live
        assert live.stop() == 0, live.output()[-4000:]
        assert live.alive_descendants() == [], "m1 up left processes behind"
    finally:
        live.kill_everything_left()


def redis_heals(live: LiveM1) -> list[FlowRun]:
    """Flow runs of flow `self-heal` for component redis, oldest first."""
    with prefect_client(live.prefect_api_url) as client:
        runs = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["self-heal"])), limit=200
        )
    found = [run for run in runs if (run.parameters or {}).get("component") == "redis"]
    return sorted(
        found, key=lambda run: run.expected_start_time or datetime.min.replace(tzinfo=UTC)
    )


def shown(runs: list[FlowRun]) -> list[tuple[str, str | None, Any]]:
    return [
        (run.name, run.state_type.value if run.state_type else None, run.parameters) for run in runs
    ]


def completed(run: FlowRun) -> bool:
    return run.state is not None and run.state.is_final()


def cache_backend(live: LiveM1) -> str:
    """The API replica's cache backend, as its readiness says (`backend memory|redis`)."""
    answer = httpx.get(f"{live.api_url}/health/ready", timeout=10)
    assert answer.status_code == 200, f"/health/ready {answer.status_code}: {answer.text[:500]}"
    return str(answer.json()["checks"]["cache"]["detail"]).removeprefix("backend ")


def redis_incidents(live: LiveM1, headers: dict[str, str]) -> list[dict[str, Any]]:
    answer = httpx.get(
        f"{live.api_url}/api/m1/incidents", params={"component": "redis"}, headers=headers,
        timeout=10,
    )  # fmt: skip
    assert answer.status_code == 200, answer.text[:500]
    return list(answer.json()["items"])


def steps(incident: dict[str, Any]) -> list[tuple[str, str]]:
    return [(action["action"], action["outcome"]) for action in incident["actions"]]


def test_redis_killed_is_healed_by_scheduled_runs_and_back_on_redis_by_itself(
    healing_m1: LiveM1, own_redis: OwnRedis
) -> None:
    live = healing_m1
    key = live.admin_key()
    assert key is not None, live.output()[-2000:]
    headers = {"Authorization": f"Bearer {key}"}
    wait_for(
        lambda: cache_backend(live),
        "the API's cache on Redis before the fault",
        until=lambda backend: backend == "redis",
        timeout_s=60,
        period_s=0.5,
        errors=(httpx.HTTPError,),
    )

    killed_at = datetime.now(UTC)
    own_redis.stop()  # SIGKILL

    (heal,) = wait_for(
        lambda: redis_heals(live),
        f"a self-heal flow run for redis started by the scheduled health runs (every {PERIOD_S} s, "
        f"heal at {THRESHOLD} failures in a row)",
        until=lambda runs: len(runs) >= 1,
        timeout_s=HEAL_DEADLINE_S,
        period_s=1.0,
        show=shown,
    )[:1]
    assert heal.parameters["component"] == "redis"
    assert isinstance(heal.parameters.get("incident_id"), int), heal.parameters

    # the API keeps answering while Redis is down, and says Redis is down
    assert cache_backend(live) in {"redis", "memory"}  # /health/ready 200
    issued = httpx.post(
        f"{live.api_url}/api/m1/tokens", headers=headers, timeout=10,
        json={"toolName": "log_agent_run", "scope": "write", "subject": "agent-heal"},
    )  # fmt: skip
    assert issued.status_code == 201, issued.text[:500]
    introspected = httpx.post(
        f"{live.api_url}/api/m1/tokens/introspect", headers=headers, timeout=10,
        data={"token": issued.json()["token"]},
    )  # fmt: skip
    assert introspected.status_code == 200, introspected.text[:500]
    assert introspected.json()["active"] is True
    health = httpx.get(f"{live.api_url}/api/m1/health", headers=headers, timeout=30)
    assert health.headers["content-type"].startswith("application/health+json"), health.text
    (ping,) = health.json()["checks"]["redis:responseTime"]
    assert ping["status"] == "fail", ping

    heal = wait_for(
        lambda: next(run for run in redis_heals(live) if run.id == heal.id),
        f"self-heal run {heal.name} to finish",
        until=completed,
        timeout_s=RUN_DEADLINE_S,
        period_s=1.0,
        show=lambda run: run.state,
    )
    assert heal.state is not None
    assert heal.state.is_completed(), heal.state
    assert cache_backend(live) == "memory"  # pinned by the heal; the API still answers
    (incident,) = redis_incidents(live, headers)
    assert incident["id"] == heal.parameters["incident_id"]
    assert incident["resolvedAt"] is None, incident
    assert ("self-heal", "started") in steps(incident)
    assert ("cache-to-memory", "mitigated") in steps(incident), steps(incident)

    restarted_at = datetime.now(UTC)
    own_redis.start()  # the same port
    wait_for(
        lambda: cache_backend(live),
        "the API's cache back on Redis by itself after Redis restarted",
        until=lambda backend: backend == "redis",
        timeout_s=RUN_DEADLINE_S,
        period_s=0.5,
        errors=(httpx.HTTPError,),
    )
    back_at = datetime.now(UTC)
    (incident,) = wait_for(
        lambda: redis_incidents(live, headers),
        "the redis incident resolved, with the move back recorded on it",
        until=lambda found: (
            len(found) == 1
            and found[0]["resolvedAt"] is not None
            and ("cache-back-to-redis", "healed") in steps(found[0])
        ),
        timeout_s=RUN_DEADLINE_S,
        period_s=1.0,
        show=lambda found: [(i["id"], i["status"], steps(i)) for i in found],
    )
    assert incident["status"] == "resolved"
    back = [run for run in redis_heals(live) if run.id != heal.id]
    assert back, shown(redis_heals(live))
    assert all(run.parameters.get("incident_id") == incident["id"] for run in back), shown(back)

    assert heal.start_time is not None
    assert heal.end_time is not None
    print(
        f"\nheal-redis figures (period {PERIOD_S} s, threshold {THRESHOLD}): "
        f"kill -> self-heal running {(heal.start_time - killed_at).total_seconds():.1f} s; "
        f"kill -> self-heal completed {(heal.end_time - killed_at).total_seconds():.1f} s; "
        f"restart -> cache on redis {(back_at - restarted_at).total_seconds():.1f} s"
    )
