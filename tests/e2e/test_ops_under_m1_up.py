"""Operations under one `m1 up` of these tests' own: Redis killed is noticed, healed and recorded
without a person; the deployment runner and the API killed come back by the supervisor.

Starting `m1 up` costs about 20 s, so both tests share one (module scope), in this order: the
heal first (it needs every component healthy when it starts), then the restarts. It runs on a
PostgreSQL database and a redis-server of the module's own (killed and restarted on the same port),
never the shared ones: a replica applies every command of its database, and these tests kill
things.

Redis killed: the health deployment runs on its real schedule every 10 s and heals at the 2nd
consecutive failure (``M1_HEALING_THRESHOLD=2``, not the default 3; the 3-in-a-row rule itself is
tested on the flow functions in tests/flows). A health run costs 4 to 12 s here from its scheduled
time to its end, mostly its process starting (printed with the figures): on an idle machine runs
come every 10 s; on a busy one a run outlasts the period, the next is cancelled (``CANCEL_NEW``) and
detection takes a period longer, within the deadlines below. A self-heal step verifies for 1 s
(``M1_HEALING_VERIFY_S``) instead of 15 s: Redis is down or up for the whole window, so a longer
one only waits.

The chain: scheduled health runs see Redis unhealthy; the 2nd starts a real `self-heal` flow run
for redis (seen through the Prefect API), which resets the pools, pins the cache to memory and
completes; the API keeps answering; the incident records the steps. Redis restarted: the next
passing check resolves the incident and, the cache still being pinned, starts self-heal again,
which moves it back to Redis. The figures measured are printed (``-s`` shows them).

Restarts: the runner stopped is reported by `GET /api/m1/health` (``prefect:runnerPoll``: the
health deployment is not polled), then killed it is restarted and serves every deployment again
with the same credential; the API killed answers again; each restart is a log line and an alert on
the dashboard.
"""

from __future__ import annotations

import signal
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psutil
import pytest
from prefect.client.schemas.filters import FlowFilter, FlowFilterName
from prefect.client.schemas.objects import FlowRun

from deployments.prefect_api import prefect_client
from tests.conftest import RUN_ID, started_redis
from tests.e2e.live import EXPECTED_DEPLOYMENTS, LiveM1
from tests.services import OwnRedis, own_database
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e

PERIOD_S = 10
THRESHOLD = 2
HEAL_DEADLINE_S = 300  # detection (THRESHOLD periods) + a queued run on a busy machine
RUN_DEADLINE_S = 240


@pytest.fixture(scope="module")
def ops_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OwnRedis]:
    server = started_redis(tmp_path_factory.mktemp("ops-redis"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def ops_m1(
    tmp_path_factory: pytest.TempPathFactory, pg_url: str, ops_redis: OwnRedis
) -> Iterator[LiveM1]:
    """One `m1 up` for this module (``pg_url``: PostgreSQL is there, or the module skips)."""
    with own_database(f"m1_test_{RUN_ID}_ops_{uuid.uuid4().hex[:6]}") as database_url:
        live = LiveM1(
            workdir=tmp_path_factory.mktemp("ops") / "m1",
            database_url=database_url,
            redis_url=ops_redis.url,
            extra_settings={
                "M1_HEALTH_PERIOD_S": str(PERIOD_S),
                "M1_HEALING_THRESHOLD": str(THRESHOLD),
                "M1_HEALING_VERIFY_S": "1",
                # only real failures count: on a busy machine a SELECT 1 or a PING takes 0.5-1 s
                # (seen at load 10), which would start heals of its own (database, prefect) and
                # queue the redis ones behind them (self-heal runs one at a time)
                "M1_HEALTH_LATENCY_DEGRADED_MS": "10000",
                "M1_HEALTH_LATENCY_UNHEALTHY_MS": "30000",
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


def health_run_costs(live: LiveM1) -> list[float]:
    """Seconds from each completed health-check run's scheduled time to its end."""
    with prefect_client(live.prefect_api_url) as client:
        runs = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["health-check"])), limit=200
        )
    return sorted(
        (run.end_time - run.expected_start_time).total_seconds()
        for run in runs
        if run.end_time is not None
        and run.expected_start_time is not None
        and run.state is not None
        and run.state.is_completed()
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


def dashboard_counts(
    live: LiveM1, headers: dict[str, str], metric: str, *, since: datetime, **equal: str
) -> int:
    """Events of ``metric`` since ``since`` whose fields equal ``equal``, as the dashboard's query
    route counts them."""
    query = {
        "metric": metric,
        "timeRange": {"from": since.isoformat(), "to": (since + timedelta(hours=1)).isoformat()},
        "filters": [{"field": f, "op": "eq", "value": v} for f, v in equal.items()],
    }
    answer = httpx.post(
        f"{live.api_url}/api/m1/dashboard/query", json=query, headers=headers, timeout=10
    )
    assert answer.status_code == 200, answer.text[:500]
    rows = answer.json()["rows"]
    return int(rows[0]["count"]) if rows else 0


def steps(incident: dict[str, Any]) -> list[tuple[str, str]]:
    return [(action["action"], action["outcome"]) for action in incident["actions"]]


def test_redis_killed_is_healed_by_scheduled_runs_and_back_on_redis_by_itself(
    ops_m1: LiveM1, ops_redis: OwnRedis
) -> None:
    live = ops_m1
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
    ops_redis.stop()  # SIGKILL

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
    # the dashboard saw it: the health runs' own events reached the API while Redis was down (they
    # used to wait for Redis in the outbox and die at the run's exit), and the heal is an alert
    wait_for(
        lambda: dashboard_counts(
            live, headers, "health_checks", since=killed_at, component="redis", status="unhealthy"
        ),
        f"{THRESHOLD} unhealthy redis checks on the dashboard's query route",
        until=lambda count: count >= THRESHOLD,
        timeout_s=60,
        period_s=1.0,
        errors=(httpx.HTTPError,),
    )
    wait_for(
        lambda: dashboard_counts(
            live, headers, "error_alerts", since=killed_at, source="m1.healing", level="warning"
        ),
        "the heal's warning alert on the dashboard",
        until=lambda count: count >= 1,
        timeout_s=60,
        period_s=1.0,
        errors=(httpx.HTTPError,),
    )

    restarted_at = datetime.now(UTC)
    ops_redis.start()  # the same port
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
    costs = health_run_costs(live)
    print(
        f"\nheal-redis figures (period {PERIOD_S} s, threshold {THRESHOLD}): "
        f"kill -> self-heal running {(heal.start_time - killed_at).total_seconds():.1f} s; "
        f"kill -> self-heal completed {(heal.end_time - killed_at).total_seconds():.1f} s; "
        f"restart -> cache on redis {(back_at - restarted_at).total_seconds():.1f} s; "
        f"health run scheduled -> ended: median {costs[len(costs) // 2]:.1f} s, "
        f"max {costs[-1]:.1f} s over {len(costs)} runs"
    )


# -- restarts ---------------------------------------------------------------------------------


def _child(live: LiveM1, module: str, *, replacing: psutil.Process | None = None) -> psutil.Process:
    """The supervisor's direct child running ``module``, once there is exactly one alive (and,
    after a kill, it is not the killed one: a SIGKILLed process can still read as running for a
    moment before the kernel and the supervisor are done with it)."""
    assert live.process is not None
    gone = replacing.pid if replacing is not None else None

    def found() -> list[psutil.Process]:
        children = psutil.Process(live.process.pid).children()  # type: ignore[union-attr]
        return [
            p
            for p in children
            if p.pid != gone and module in p.cmdline() and p.status() != psutil.STATUS_ZOMBIE
        ]

    (child,) = wait_for(
        found,
        f"one live {module} child of m1 up",
        until=lambda alive: len(alive) == 1,
        timeout_s=120,
        period_s=0.2,
        errors=(psutil.NoSuchProcess,),
        show=lambda alive: [p.pid for p in alive],
    )
    return child


def test_killed_runner_and_api_come_back_with_a_log_line_and_an_alert(ops_m1: LiveM1) -> None:
    live = ops_m1
    key = live.admin_key()
    assert key is not None
    headers = {"Authorization": f"Bearer {key}"}

    runner = _child(live, "deployments.serve")
    credential = runner.environ()["M1_API_KEY"]
    # stopped first (SIGSTOP: it polls no more, and the supervisor, seeing it alive, leaves it):
    # the replica's own report says the health deployment is not polled, which the health flow,
    # run by that runner, could not
    runner.suspend()
    try:
        (poll,) = wait_for(
            lambda: health_checks(live, headers)["prefect:runnerPoll"],
            "GET /api/m1/health to report the stopped runner (prefect:runnerPoll not pass)",
            until=lambda entries: entries[0]["status"] != "pass",
            timeout_s=120,
            period_s=1.0,
            errors=(httpx.HTTPError,),
        )
    finally:
        runner_killed_at = live.started_at = datetime.now(UTC)  # served again: polled after it
        runner.kill()
    assert "health-check/health-check last polled by a runner or worker" in poll["output"], poll
    restarted = _child(live, "deployments.serve", replacing=runner)
    assert restarted.pid != runner.pid
    assert restarted.environ()["M1_API_KEY"] == credential  # this start's service key, still
    wait_for(
        live.served,
        f"the restarted runner to serve {sorted(EXPECTED_DEPLOYMENTS)}",
        until=lambda served: served >= EXPECTED_DEPLOYMENTS,
        timeout_s=120,
        period_s=0.5,
    )
    log = live.output()
    assert (
        f"deployment-runner (pid {runner.pid}) exited with code -9 (SIGKILL); "
        "restarting it in 1 s (attempt 1, 1 of at most 5 restarts within 600 s)"
    ) in log
    assert f"restarted deployment-runner (pid {restarted.pid}" in log
    _wait_for_alert(live, headers, since=runner_killed_at, what="the runner's restart alert")

    checks = health_checks(live, headers)
    (prefect,) = checks["prefect:responseTime"]
    assert " answered in " in prefect["output"], prefect  # 200; its latency grade is the load's
    (poll,) = wait_for(
        lambda: health_checks(live, headers)["prefect:runnerPoll"],
        "GET /api/m1/health to see the restarted runner poll",
        until=lambda entries: entries[0]["status"] == "pass",
        timeout_s=120,
        period_s=1.0,
        errors=(httpx.HTTPError,),
    )

    api = _child(live, "m1lib.api")
    api_killed_at = datetime.now(UTC)
    api.send_signal(signal.SIGKILL)
    back = _child(live, "m1lib.api", replacing=api)
    assert back.pid != api.pid
    wait_for(
        lambda: httpx.get(f"{live.api_url}/health/live", timeout=5).status_code,
        "the restarted API to answer /health/live",
        until=lambda status: status == 200,
        timeout_s=120,
        period_s=0.2,
        errors=(httpx.HTTPError,),
    )
    assert f"api (pid {api.pid}) exited with code -9 (SIGKILL)" in live.output()

    _wait_for_alert(live, headers, since=api_killed_at, what="the API's restart alert")


def health_checks(live: LiveM1, headers: dict[str, str]) -> dict[str, Any]:
    """GET /api/m1/health's checks (200 or 503: any failing check fails the whole report)."""
    health = httpx.get(f"{live.api_url}/api/m1/health", headers=headers, timeout=30)
    assert health.status_code in {200, 503}, health.text
    assert health.headers["content-type"].startswith("application/health+json")
    checks: dict[str, Any] = health.json()["checks"]
    return checks


def _wait_for_alert(live: LiveM1, headers: dict[str, str], *, since: datetime, what: str) -> None:
    """One warning of source m1-up recorded since ``since``, on the dashboard's query route (an
    alert raised while the API was down reaches the restarted one)."""
    later = datetime.now(UTC) + timedelta(hours=1)
    query = {
        "metric": "error_alerts",
        "timeRange": {"from": since.isoformat(), "to": later.isoformat()},
        "filters": [{"field": "source", "op": "eq", "value": "m1-up"}],
        "groupBy": ["level"],
    }
    wait_for(
        lambda: httpx.post(
            f"{live.api_url}/api/m1/dashboard/query", json=query, headers=headers, timeout=10
        ).json(),
        what,
        until=lambda answer: answer.get("rows") == [{"level": "warning", "count": 1}],
        timeout_s=60,
        period_s=1.0,
        errors=(httpx.HTTPError,),
    )
