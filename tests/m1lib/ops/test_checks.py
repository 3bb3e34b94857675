"""Each health check against the real thing, healthy and broken, graded by the settings' thresholds.

Broken services are the test's own: a redis-server it kills, a database and an HTTP server on a
closed port. A fake Prefect and fake replicas are small HTTP servers of the test's own.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psutil
import pytest
import redis as redis_lib

from m1lib.control import CommandRegistry, ReplicaAgent, ReplicaFigures
from m1lib.db.migrate import upgrade
from m1lib.db.session import Database
from m1lib.metrics import MetricsRuntime
from m1lib.ops.checks import HealthChecker, run_full_health_check
from m1lib.ops.report import CheckResult, Status
from m1lib.settings import Settings
from tests.fake_http import FakeHttp, Routes, fake_http_servers
from tests.services import OwnRedis, free_port


@pytest.fixture
def fake_http() -> Iterator[Callable[[Routes], FakeHttp]]:
    yield from fake_http_servers()


# A probe's round trip is wall-clock time: on a busy machine a SELECT 1 takes 250 ms. Tests that
# grade latency set their bounds (with_health); the others must not turn on the machine's load.
UNGRADED_LATENCY = {"latency_degraded_ms": 60_000.0, "latency_unhealthy_ms": 120_000.0}


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(replica={"id": "me", "heartbeat_s": 5.0}, health=UNGRADED_LATENCY)


@pytest.fixture
def db(settings: Settings) -> Iterator[Database]:
    database = Database(settings)
    upgrade(database)
    yield database
    database.dispose()


def closed_url(scheme: str = "http", userinfo: str = "") -> str:
    return f"{scheme}://{userinfo}127.0.0.1:{free_port()}"


def checker(settings: Settings, db: Database | None = None, **kwargs: Any) -> HealthChecker:
    return HealthChecker(settings=settings, db=db, redis_client=kwargs.pop("redis", None), **kwargs)


def with_health(settings: Settings, **health: Any) -> Settings:
    return settings.model_copy(update={"health": settings.health.model_copy(update=health)})


def heartbeat(
    settings: Settings, db: Database, replica_id: str, base_url: str, **figures: Any
) -> None:
    """Write the heartbeat row a replica ``replica_id`` at ``base_url`` would write."""
    own = settings.model_copy(
        update={
            "replica": settings.replica.model_copy(update={"id": replica_id}),
            "api": settings.api.model_copy(update={"public_url": base_url}),
        }
    )
    agent = ReplicaAgent(
        own, db=db, registry=CommandRegistry(), figures=lambda: ReplicaFigures(**figures)
    )
    agent.heartbeat()


def only(results: list[CheckResult], measurement: str) -> CheckResult:
    found = [result for result in results if result.measurement == measurement]
    assert len(found) == 1, results
    return found[0]


def by_replica(results: list[CheckResult], replica_id: str) -> list[CheckResult]:
    return [result for result in results if f"replica {replica_id}:" in result.message]


# -- database ------------------------------------------------------------------------------------


def test_database_round_trip_and_pool_on_postgres(
    make_settings: Callable[..., Settings], pg_url: str
) -> None:
    settings = make_settings(database={"url": pg_url}, health=UNGRADED_LATENCY)
    with Database(settings) as database:
        results = checker(settings, database).check_database()
    trip = only(results, "responseTime")
    assert trip.status is Status.HEALTHY
    assert isinstance(trip.observed_value, float)
    assert trip.observed_unit == "ms"
    assert trip.error_rate == 0.0
    pool = only(results, "connections")
    assert pool.status is Status.HEALTHY
    assert pool.observed_unit == "connections"
    assert "at most 10" in pool.message  # pool_size 5 and as many overflow


def test_database_unreachable_is_unhealthy_without_its_password(
    make_settings: Callable[..., Settings],
) -> None:
    url = closed_url("postgresql", "m1:sekrit-pw@") + "/m1"
    settings = make_settings(database={"url": url, "connect_timeout_s": 1})
    with Database(settings) as database:
        report = run_full_health_check(checker(settings, database), components=["database"])
    trip = only(list(report.checks), "responseTime")
    assert trip.status is Status.UNHEALTHY
    assert trip.error_rate == 1.0
    assert "OperationalError" in trip.message
    assert trip.recommendations[-1] == "Runbook: docs/runbooks/database.md"
    assert "sekrit-pw" not in json.dumps(report.health_json())


def test_latency_thresholds_make_a_check_degraded_then_unhealthy(
    settings: Settings, db: Database
) -> None:
    degraded = with_health(settings, latency_degraded_ms=0)
    assert only(checker(degraded, db).check_database(), "responseTime").status is Status.DEGRADED
    unhealthy = with_health(settings, latency_degraded_ms=0, latency_unhealthy_ms=0)
    result = only(checker(unhealthy, db).check_database(), "responseTime")
    assert result.status is Status.UNHEALTHY
    assert result.recommendations[-1].endswith("docs/runbooks/database.md")


# -- redis ---------------------------------------------------------------------------------------


def test_redis_healthy_then_unhealthy_when_its_server_dies_then_degraded_by_its_error_rate(
    make_settings: Callable[..., Settings], own_redis: OwnRedis
) -> None:
    settings = make_settings()
    client = redis_lib.Redis.from_url(own_redis.url, socket_timeout=0.5)
    probe = checker(settings, redis=client)
    results = probe.check_redis()
    assert only(results, "responseTime").status is Status.HEALTHY
    memory = only(results, "memory")
    assert (memory.status, memory.observed_unit) == (Status.HEALTHY, "bytes")
    assert "maxmemory 0: unbounded" in memory.message

    own_redis.stop()
    down = only(probe.check_redis(), "responseTime")
    assert down.status is Status.UNHEALTHY
    assert "ConnectionError" in down.message
    assert down.error_rate == 0.5

    own_redis.start()  # same port: back, but one probe of three failed within the window
    back = only(probe.check_redis(), "responseTime")
    assert back.status is Status.DEGRADED
    assert back.error_rate == pytest.approx(1 / 3)
    client.close()


def test_redis_memory_against_maxmemory_and_unbounded_in_production(
    make_settings: Callable[..., Settings], own_redis: OwnRedis
) -> None:
    client = redis_lib.Redis.from_url(own_redis.url, socket_timeout=0.5)
    production = make_settings(env="production", jwt={"secret": "p" * 40})
    assert only(checker(production, redis=client).check_redis(), "memory").status is (
        Status.DEGRADED
    )
    client.config_set("maxmemory", str(1 << 30))
    bounded = only(checker(production, redis=client).check_redis(), "memory")
    assert (bounded.status, bounded.observed_unit) == (Status.HEALTHY, "percent")
    used = int(client.info("memory")["used_memory"])
    client.config_set("maxmemory", str(int(used * 1.05)))  # used is now ~95 % of the bound
    tight = only(checker(production, redis=client).check_redis(), "memory")
    assert tight.status is Status.UNHEALTHY, tight
    client.close()


def test_no_redis_configured_is_healthy_and_reported(settings: Settings) -> None:
    (result,) = checker(settings).check_redis()
    assert result.status is Status.HEALTHY
    assert result.observed_value == "not configured"


# -- api -----------------------------------------------------------------------------------------


def test_api_probes_the_others_over_http_and_reads_itself_in_process(
    settings: Settings, db: Database, fake_http: Callable[[Routes], FakeHttp]
) -> None:
    ready = fake_http({"/health/ready": (200, {"status": "ready"})})
    not_ready = fake_http({"/health/ready": (503, {"detail": "not ready"})})
    itself = fake_http({"/health/ready": (200, {"status": "ready"})})
    heartbeat(settings, db, "me", itself.url)
    heartbeat(settings, db, "up", ready.url)
    heartbeat(settings, db, "sick", not_ready.url)
    heartbeat(settings, db, "gone", closed_url())
    probe = checker(
        settings,
        db,
        this_replica="me",
        figures=ReplicaFigures,
        readiness=lambda: (True, "ready"),
    )
    results = probe.check_api()
    status = {rid: by_replica(results, rid)[0].status for rid in ("me", "up", "sick", "gone")}
    assert status == {
        "me": Status.HEALTHY,
        "up": Status.HEALTHY,
        "sick": Status.UNHEALTHY,
        "gone": Status.UNHEALTHY,
    }
    assert itself.requests == []  # a replica never calls itself
    assert ready.requests == ["/health/ready"]
    assert {result.error_rate for result in results} == {0.5}
    assert "ConnectError" in by_replica(results, "gone")[0].message


def test_api_without_any_live_replica_is_unhealthy(settings: Settings, db: Database) -> None:
    (result,) = checker(settings, db).check_api()
    assert result.status is Status.UNHEALTHY
    assert "no API replica" in result.message


def test_unreadable_heartbeats_degrade_but_keep_this_replicas_figures(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(database={"url": closed_url("postgresql") + "/m1"})
    with Database(settings) as database:
        probe = checker(
            settings,
            database,
            this_replica="me",
            figures=lambda: ReplicaFigures(revocation_sync_age_s=0.5),
            readiness=lambda: (False, "not ready: database"),
        )
        sync = probe.check_revocation_sync()
        api = probe.check_api()
    assert by_replica(sync, "me")[0].status is Status.HEALTHY
    unknown = [result for result in sync if "other replicas unknown" in result.message]
    assert [result.status for result in unknown] == [Status.DEGRADED]
    assert by_replica(api, "me")[0].status is Status.UNHEALTHY


# -- memory --------------------------------------------------------------------------------------


def test_memory_grades_the_machine_and_each_replicas_rss(settings: Settings, db: Database) -> None:
    total = psutil.virtual_memory().total
    heartbeat(settings, db, "fat", closed_url(), rss_bytes=int(total * 0.95))
    heartbeat(settings, db, "lean", closed_url(), rss_bytes=50 << 20)
    own_rss = 80 << 20
    probe = checker(
        settings,
        db,
        this_replica="me",
        figures=lambda: ReplicaFigures(rss_bytes=own_rss),
        readiness=lambda: (True, "ready"),
    )
    results = probe.check_memory()
    machine = only(results, "utilization")
    assert machine.observed_unit == "percent"
    assert machine.status is Status.HEALTHY  # this machine is far from 75 %
    rss = {rid: by_replica(results, rid)[0] for rid in ("me", "fat", "lean")}
    assert rss["me"].observed_value == own_rss
    assert rss["me"].status is Status.HEALTHY
    assert rss["fat"].status is Status.UNHEALTHY
    assert rss["lean"].status is Status.HEALTHY

    tight = with_health(settings, memory_degraded_pct=0, memory_unhealthy_pct=100)
    results = checker(tight, db).check_memory()
    assert only(results, "utilization").status is Status.DEGRADED


# -- prefect -------------------------------------------------------------------------------------


def test_prefect_reachable_and_no_health_run_yet(
    settings: Settings, fake_http: Callable[[Routes], FakeHttp]
) -> None:
    prefect = fake_http({"/api/health": (200, True), "/api/flow_runs/filter": (200, [])})
    results = checker(settings, prefect_api_url=prefect.url + "/api").check_prefect()
    assert only(results, "responseTime").status is Status.HEALTHY
    last = only(results, "lastHealthRun")
    assert (last.status, last.observed_value, last.observed_unit) == (Status.HEALTHY, None, "s")


def test_prefect_grades_the_age_of_the_last_health_run(
    settings: Settings, fake_http: Callable[[Routes], FakeHttp]
) -> None:
    def ended(seconds_ago: float) -> Routes:
        end = (datetime.now(UTC) - timedelta(seconds=seconds_ago)).isoformat()
        return {"/api/health": (200, True), "/api/flow_runs/filter": (200, [{"end_time": end}])}

    expected = {30: Status.HEALTHY, 400: Status.DEGRADED, 1000: Status.UNHEALTHY}  # period 60
    for age, status in expected.items():
        prefect = fake_http(ended(age))
        results = checker(settings, prefect_api_url=prefect.url + "/api").check_prefect()
        last = only(results, "lastHealthRun")
        assert last.status is status, last
        assert last.observed_value == pytest.approx(age, abs=5)


def test_prefect_grades_the_last_poll_of_the_health_deployment_by_a_runner(
    settings: Settings, fake_http: Callable[[Routes], FakeHttp]
) -> None:
    """A runner gone or stopped stops polling (the health flow it runs cannot say so): degraded
    past 3 polls + 5 s of M1_PREFECT_RUNNER_POLL_S, unhealthy past 6 polls + 10 s; no deployment:
    healthy."""
    deployment = "/api/deployments/name/health-check/health-check"

    def polled(seconds_ago: float | None) -> Routes:
        at = None
        if seconds_ago is not None:
            at = (datetime.now(UTC) - timedelta(seconds=seconds_ago)).isoformat()
        return {"/api/health": (200, True), "/api/flow_runs/filter": (200, []),
                deployment: (200, {"name": "health-check", "last_polled": at})}  # fmt: skip

    poll_s = settings.prefect.runner_poll_s
    degraded, unhealthy = 3 * poll_s + 5, 6 * poll_s + 10
    expected = {
        poll_s: Status.HEALTHY,
        (degraded + unhealthy) / 2: Status.DEGRADED,
        unhealthy + 20: Status.UNHEALTHY,
    }
    for age, status in expected.items():
        prefect = fake_http(polled(age))
        results = checker(settings, prefect_api_url=prefect.url + "/api").check_prefect()
        poll = only(results, "runnerPoll")
        assert (poll.status, poll.observed_unit) == (status, "s"), poll
        assert poll.observed_value == pytest.approx(age, abs=5)
        assert "last polled by a runner or worker" in poll.message
    never = only(
        checker(settings, prefect_api_url=fake_http(polled(None)).url + "/api").check_prefect(),
        "runnerPoll",
    )
    assert (never.status, never.observed_value) == (Status.DEGRADED, None)
    assert "never polled" in never.message
    missing = fake_http({"/api/health": (200, True), "/api/flow_runs/filter": (200, [])})
    absent = only(
        checker(settings, prefect_api_url=missing.url + "/api").check_prefect(), "runnerPoll"
    )
    assert (absent.status, absent.observed_value) == (Status.HEALTHY, None)
    assert "no health-check/health-check deployment" in absent.message


def test_prefect_unreachable_is_unhealthy_and_masks_the_password(settings: Settings) -> None:
    url = closed_url(userinfo="prefect:sekrit-pw@") + "/api"
    (result,) = checker(settings, prefect_api_url=url).check_prefect()
    assert result.status is Status.UNHEALTHY
    assert "unreachable" in result.message
    assert "ConnectError" in result.message
    assert "sekrit-pw" not in result.message


# -- revocation sync and event store -------------------------------------------------------------


def test_revocation_sync_age_against_the_staleness_bound(settings: Settings, db: Database) -> None:
    ages = {"fresh": 0.5, "slow": 6.0, "stale": 11.0, "never": None}  # bound 10 s: degraded > 5
    for rid, age in ages.items():
        heartbeat(settings, db, rid, closed_url(), revocation_sync_age_s=age)
    results = checker(settings, db).check_revocation_sync()
    status = {rid: by_replica(results, rid)[0].status for rid in ages}
    assert status == {
        "fresh": Status.HEALTHY,
        "slow": Status.DEGRADED,
        "stale": Status.UNHEALTHY,
        "never": Status.UNHEALTHY,
    }


def test_event_store_lag_and_drops_growing_between_checks(settings: Settings, db: Database) -> None:
    for rid, lag in {"quick": 0.1, "behind": 10.0, "stuck": 60.0}.items():
        heartbeat(settings, db, rid, closed_url(), store_lag_s=lag, queue_drops=3)
    probe = checker(settings, db)
    results = probe.check_event_store()
    lags = {
        rid: next(r for r in by_replica(results, rid) if r.measurement == "lag").status
        for rid in ("quick", "behind", "stuck")
    }
    assert lags == {
        "quick": Status.HEALTHY,
        "behind": Status.DEGRADED,
        "stuck": Status.UNHEALTHY,
    }
    drops = [r for r in results if r.measurement == "droppedEvents"]
    assert {r.status for r in drops} == {Status.HEALTHY}  # a first look has nothing to compare

    heartbeat(settings, db, "quick", closed_url(), store_lag_s=0.1, queue_drops=7)
    probe._replicas = (0.0, None)  # read the new heartbeat now, not a second later
    again = probe.check_event_store()
    grown = next(r for r in by_replica(again, "quick") if r.measurement == "droppedEvents")
    assert grown.status is Status.DEGRADED
    assert "4 since the last check" in grown.message


# -- policy engine -------------------------------------------------------------------------------


def test_policy_engine_p99_from_the_event_store(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    metrics = MetricsRuntime(settings, replica_id="t1")
    metrics.start()
    try:
        (empty,) = checker(settings, metrics=metrics).check_policy_engine()
        assert (empty.status, empty.observed_value) == (Status.HEALTHY, None)
        for check_ms in [0.2] * 99 + [40.0]:
            metrics.record_event(
                "policy_decisions",
                toolName="search",
                scope="read",
                allowed=True,
                reason="ok",
                subject="agent",
                checkMs=check_ms,
            )
        assert metrics.flush()
        (result,) = checker(settings, metrics=metrics).check_policy_engine()
        assert result.status is Status.HEALTHY
        assert result.observed_unit == "ms"
        assert isinstance(result.observed_value, float)
        assert result.observed_value > 0.2
        slow = with_health(settings, latency_degraded_ms=0.1)
        (graded,) = checker(slow, metrics=metrics).check_policy_engine()
        assert graded.status is Status.DEGRADED
    finally:
        metrics.close()


# -- running them all ----------------------------------------------------------------------------


class Stuck(HealthChecker):
    """Redis hangs until released; the memory check raises."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings=settings, db=None, redis_client=None)
        self.release = threading.Event()

    def check_redis(self) -> list[CheckResult]:
        self.release.wait(30)
        return []

    def check_memory(self) -> list[CheckResult]:
        raise RuntimeError("boom")


def test_a_hung_or_raising_check_is_an_unhealthy_result_never_an_exception(
    settings: Settings,
) -> None:
    stuck = Stuck(settings)
    try:
        report = run_full_health_check(
            stuck, components=["redis", "memory", "revocation_sync"], timeout_s=0.3
        )
    finally:
        stuck.release.set()
    results = {check.component: check for check in report.checks}
    assert results["redis"].status is Status.UNHEALTHY
    assert "did not finish within 0.3 s (TimeoutError)" in results["redis"].message
    assert results["memory"].status is Status.UNHEALTHY
    assert "RuntimeError" in results["memory"].message
    assert results["revocation_sync"].status is not Status.UNHEALTHY
    assert report.status is Status.UNHEALTHY


def test_the_full_report_keys_every_component_and_measurement(
    settings: Settings, db: Database, fake_http: Callable[[Routes], FakeHttp]
) -> None:
    prefect = fake_http({"/api/health": (200, True), "/api/flow_runs/filter": (200, [])})
    probe = checker(
        settings,
        db,
        prefect_api_url=prefect.url + "/api",
        this_replica="me",
        figures=lambda: ReplicaFigures(revocation_sync_age_s=0.1, rss_bytes=1 << 20),
        readiness=lambda: (True, "ready"),
    )
    report = run_full_health_check(probe)
    body = report.health_json(service_id="me")
    assert body["status"] == "pass", body
    assert set(report.by_component()) == {
        "database",
        "redis",
        "api",
        "memory",
        "prefect",
        "revocation_sync",
        "event_store",
        "policy_engine",
    }
    assert {"database:responseTime", "prefect:lastHealthRun", "memory:rss"} <= set(body["checks"])
    entry = body["checks"]["database:responseTime"][0]
    assert {"observedValue", "observedUnit", "status", "time"} <= set(entry)
