"""The health checks: each measures one component for real and grades it against the settings.

A :class:`HealthChecker` holds the live handles it probes (database, Redis, the metrics runtime)
and, inside a replica, that replica's own figures and readiness, so a replica never calls its own
HTTP endpoint. :func:`run_full_health_check` runs every check at once, each with a timeout, and
never raises: a check that fails or hangs is an unhealthy result naming the error class.

Thresholds are ``M1_HEALTH_*`` settings; docs/contracts.md ("Health report (as built)") lists
every measurement. No Prefect import here: the replica runs these checks on its request path.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

import httpx
import psutil
import redis
from sqlalchemy import exc, text
from sqlalchemy.pool import QueuePool

from m1lib import control
from m1lib.control import ReplicaFigures, ReplicaStatus
from m1lib.errors import BusyError, M1Error
from m1lib.ops.report import CheckResult, HealthReport, Status, runbook, worst
from m1lib.settings import Environment, Settings, redact_url

if TYPE_CHECKING:
    from m1lib.db.session import Database
    from m1lib.metrics import MetricsRuntime

__all__ = [
    "HEALTH_FLOW_NAME",
    "HealthChecker",
    "ReadinessProbe",
    "run_full_health_check",
]

logger = logging.getLogger("m1.ops.checks")

HEALTH_FLOW_NAME: Final = "health-check"
"""The flow whose last completed run ``check_prefect`` ages (the health flow of issue 11)."""
HEALTH_DEPLOYMENT: Final = f"{HEALTH_FLOW_NAME}/{HEALTH_FLOW_NAME}"
"""Its deployment, whose last poll by a runner or worker ``check_prefect`` ages."""

_MESSAGE_MAX = 300
_REPLICAS_FRESH_S = 1.0
# What a person does first, per component; the runbook link is always the last line.
_ADVICE: Final = {
    "database": "Check that the database server is up and reachable from every replica.",
    "redis": "Check the Redis server; M1 falls back to its memory cache while it is away.",
    "api": "Check the replica's log and its /health/ready answer.",
    "memory": "Find the process growing; evict caches (command cache.evict) or add memory.",
    "prefect": "Check the Prefect server and the deployment runner (`m1 up` restarts them).",
    "revocation_sync": "Force a resync (command revocation.resync) and check the database.",
    "event_store": "Check the replica's ingest (GET /metrics) and Redis stream consumers.",
    "policy_engine": "Check the replica's CPU and reload the tool registry and policies.",
}

ReadinessProbe = Callable[[], tuple[bool, str]]
"""In-process readiness of this replica: ``(ready, detail)``."""


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0


def _error_text(error: BaseException) -> str:
    """An error as one line for a person, any URL password masked. M1's and the clients' own
    errors keep their text; any other (a driver's, carrying SQL and parameters) only its class."""
    shown = isinstance(error, M1Error | redis.RedisError | httpx.HTTPError | OSError)
    raw = f"{type(error).__name__}: {error}" if shown else f"{type(error).__name__} (see the log)"
    text_ = redact_url(raw.replace("\n", " "))
    return text_ if len(text_) <= _MESSAGE_MAX else text_[: _MESSAGE_MAX - 1] + "…"


def _grade(value: float | None, degraded: float, unhealthy: float) -> Status:
    """Healthy below ``degraded``, degraded from it, unhealthy past ``unhealthy``."""
    if value is None:
        return Status.HEALTHY
    if value > unhealthy:
        return Status.UNHEALTHY
    if value > degraded:
        return Status.DEGRADED
    return Status.HEALTHY


class _ErrorWindow:
    """Outcomes of one kind of probe over the last ``window_s``: the check's error rate."""

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self._seen: deque[tuple[float, bool]] = deque()
        self._lock = threading.Lock()

    def add(self, failed: bool) -> float:
        """Record one outcome; the share of failures in the window, this one included."""
        now = time.monotonic()
        with self._lock:
            self._seen.append((now, failed))
            while self._seen and self._seen[0][0] < now - self.window_s:
                self._seen.popleft()
            return sum(1 for _, bad in self._seen if bad) / len(self._seen)


@dataclass(frozen=True, slots=True)
class _Self:
    """This replica, when the checker runs inside one: its id, figures and readiness."""

    replica_id: str
    figures: Callable[[], ReplicaFigures]
    readiness: ReadinessProbe


class HealthChecker:
    """Measures every component of M1; one per process, reused (it keeps the error windows).

    Inside a replica give ``this_replica`` (its id), ``figures`` and ``readiness``: the checks
    then read this replica in process and probe only the others over HTTP.

    >>> checker = HealthChecker(settings=settings, db=db, redis_client=make_redis(settings),
    ...                         metrics=metrics, prefect_api_url="http://127.0.0.1:4200/api")
    >>> report = run_full_health_check(checker)
    """

    def __init__(
        self,
        *,
        settings: Settings,
        db: Database | None,
        redis_client: redis.Redis | None,
        metrics: MetricsRuntime | None = None,
        prefect_api_url: str | None = None,
        this_replica: str | None = None,
        figures: Callable[[], ReplicaFigures] | None = None,
        readiness: ReadinessProbe | None = None,
    ) -> None:
        self.settings = settings
        self.thresholds = settings.health
        self.db = db
        self.redis = redis_client
        self.metrics = metrics
        self.prefect_api_url = prefect_api_url.rstrip("/") if prefect_api_url else None
        self.this: _Self | None = None
        if this_replica is not None:
            if figures is None or readiness is None:
                raise ValueError("this_replica needs its figures and readiness")
            self.this = _Self(this_replica, figures, readiness)
        self._windows = {
            name: _ErrorWindow(self.thresholds.error_window_s) for name in ("database", "redis")
        }
        self._replicas: tuple[float, list[ReplicaStatus] | None] = (0.0, None)
        self._replicas_lock = threading.Lock()
        # one client for every HTTP probe: building one costs ~20 ms (its TLS context)
        self._http = httpx.Client(timeout=self.thresholds.check_timeout_s)
        self._drops: dict[str, int] = {}
        self._drops_lock = threading.Lock()

    def close(self) -> None:
        """Close its HTTP client and the Redis client it was given (the database belongs to
        its owner)."""
        self._http.close()
        if self.redis is not None:
            self.redis.close()

    def checks(self) -> dict[str, Callable[[], list[CheckResult]]]:
        """Every check by component, in :data:`m1lib.ops.report.COMPONENTS` order."""
        return {
            "database": self.check_database,
            "redis": self.check_redis,
            "api": self.check_api,
            "memory": self.check_memory,
            "prefect": self.check_prefect,
            "revocation_sync": self.check_revocation_sync,
            "event_store": self.check_event_store,
            "policy_engine": self.check_policy_engine,
        }

    # -- building results ------------------------------------------------------------------

    def _round_trip_failed(
        self, component: str, what: str, started: float, error: BaseException
    ) -> CheckResult:
        """The round trip (``what``) started at ``started`` failed: unhealthy, counted in the
        component's error window."""
        return self.result(
            component,
            "responseTime",
            Status.UNHEALTHY,
            latency_ms=_ms_since(started),
            value=None,
            unit="ms",
            message=f"{what} failed: {_error_text(error)}",
            error_rate=self._windows[component].add(True),
        )

    def result(
        self,
        component: str,
        measurement: str,
        status: Status,
        *,
        latency_ms: float,
        value: float | int | str | None,
        unit: str,
        message: str,
        error_rate: float | None = None,
    ) -> CheckResult:
        """A result of ``component``; anything not healthy gets the advice and the runbook."""
        advice: tuple[str, ...] = ()
        if status is not Status.HEALTHY:
            advice = (_ADVICE[component], f"Runbook: {runbook(component)}")
        return CheckResult(
            component=component,
            measurement=measurement,
            status=status,
            latency_ms=latency_ms,
            observed_value=value,
            observed_unit=unit,
            message=message,
            error_rate=error_rate,
            recommendations=advice,
        )

    def _latency_status(self, latency_ms: float) -> Status:
        t = self.thresholds
        return _grade(latency_ms, t.latency_degraded_ms, t.latency_unhealthy_ms)

    def _rate_status(self, rate: float) -> Status:
        """A past failure's share: at most degraded, since the probe just now succeeded."""
        t = self.thresholds
        graded = _grade(rate, t.error_rate_degraded, t.error_rate_unhealthy)
        return Status.DEGRADED if graded is not Status.HEALTHY else graded

    def _others(self) -> list[ReplicaStatus]:
        """The other replicas whose heartbeat is at most three periods old, read once per
        second at most (four checks ask in one run). Raises when the heartbeats cannot be read."""
        if self.db is None:
            return []
        with self._replicas_lock:
            read_at, replicas = self._replicas
            if replicas is None or time.monotonic() - read_at > _REPLICAS_FRESH_S:
                replicas = control.live_replicas(self.db, 3 * self.settings.replica.heartbeat_s)
                self._replicas = (time.monotonic(), replicas)
        this = self.this.replica_id if self.this is not None else None
        return [replica for replica in replicas if replica.id != this]

    def _others_or_error(self) -> tuple[list[ReplicaStatus], str | None]:
        """The other replicas, or none and why: a database outage must not hide this replica's
        own figures, nor fail the components that only read heartbeats."""
        try:
            return self._others(), None
        except (M1Error, exc.SQLAlchemyError) as error:
            return [], f"other replicas unknown: {_error_text(error)}"

    # -- the checks ------------------------------------------------------------------------

    def check_database(self) -> list[CheckResult]:
        """``SELECT 1`` round trip; the pool's connections checked out against its capacity."""
        if self.db is None:
            return [
                self.result(
                    "database",
                    "responseTime",
                    Status.UNHEALTHY,
                    latency_ms=0.0,
                    value=None,
                    unit="ms",
                    message="no database configured",
                )
            ]
        window = self._windows["database"]
        started = time.perf_counter()
        try:
            with self.db.connect() as connection:
                connection.execute(text("SELECT 1"))
        except Exception as error:  # any failure of the round trip is the finding
            return [self._round_trip_failed("database", "SELECT 1", started, error)]
        latency = _ms_since(started)
        rate = window.add(False)
        status = worst((self._latency_status(latency), self._rate_status(rate)))
        results = [
            self.result(
                "database",
                "responseTime",
                status,
                latency_ms=latency,
                value=round(latency, 3),
                unit="ms",
                message=f"SELECT 1 in {latency:.1f} ms; {rate:.0%} of probes failed lately",
                error_rate=rate,
            )
        ]
        pool = self.db.engine.pool
        if isinstance(pool, QueuePool):
            out, size = pool.checkedout(), pool.size()
            # QueuePool keeps no public name for its overflow bound (make_engine sets it)
            capacity = size + max(0, int(getattr(pool, "_max_overflow", 0)))
            exhausted = out >= capacity
            results.append(
                self.result(
                    "database",
                    "connections",
                    Status.DEGRADED if exhausted else Status.HEALTHY,
                    latency_ms=0.0,
                    value=out,
                    unit="connections",
                    message=f"{out} checked out of {size} kept open (at most {capacity})"
                    + ("; the pool is exhausted, requests wait" if exhausted else ""),
                )
            )
        return results

    def check_redis(self) -> list[CheckResult]:
        """PING round trip; used memory against ``maxmemory`` (0: unbounded, a warning in
        production). Without Redis configured M1 runs on its memory cache: healthy, reported."""
        if self.redis is None:
            return [
                self.result(
                    "redis",
                    "responseTime",
                    Status.HEALTHY,
                    latency_ms=0.0,
                    value="not configured",
                    unit="",
                    message="no Redis configured (M1_REDIS_URL empty): memory cache, one replica",
                )
            ]
        window = self._windows["redis"]
        started = time.perf_counter()
        try:
            self.redis.ping()
            latency = _ms_since(started)
            memory: dict[str, Any] = self.redis.info("memory")
        except (redis.RedisError, OSError) as error:
            return [self._round_trip_failed("redis", "PING", started, error)]
        rate = window.add(False)
        status = worst((self._latency_status(latency), self._rate_status(rate)))
        results = [
            self.result(
                "redis",
                "responseTime",
                status,
                latency_ms=latency,
                value=round(latency, 3),
                unit="ms",
                message=f"PING in {latency:.1f} ms; {rate:.0%} of probes failed lately",
                error_rate=rate,
            )
        ]
        used, limit = int(memory.get("used_memory", 0)), int(memory.get("maxmemory", 0))
        if limit <= 0:
            production = self.settings.env is Environment.PRODUCTION
            results.append(
                self.result(
                    "redis",
                    "memory",
                    Status.DEGRADED if production else Status.HEALTHY,
                    latency_ms=0.0,
                    value=used,
                    unit="bytes",
                    message=f"{used} bytes used; maxmemory 0: unbounded"
                    + (" (set maxmemory in production)" if production else ""),
                )
            )
        else:
            percent = 100.0 * used / limit
            t = self.thresholds
            results.append(
                self.result(
                    "redis",
                    "memory",
                    _grade(percent, t.memory_degraded_pct, t.memory_unhealthy_pct),
                    latency_ms=0.0,
                    value=round(percent, 2),
                    unit="percent",
                    message=f"{used} of maxmemory {limit} bytes used ({percent:.1f} %)",
                )
            )
        return results

    def check_api(self) -> list[CheckResult]:
        """Each live replica's ``/health/ready`` over HTTP with a timeout; this replica's own
        readiness in process (a replica never calls itself)."""
        results: list[CheckResult] = []
        if self.this is not None:
            started = time.perf_counter()
            ready, detail = self.this.readiness()
            latency = _ms_since(started)
            results.append(self._api_result(self.this.replica_id, ready, latency, detail))
        others, unknown = self._others_or_error()
        if unknown is not None:
            results.append(self._unknown("api", "responseTime", "ms", unknown))
        if others:  # at once: a few dead replicas must not take the check past its timeout
            with ThreadPoolExecutor(min(8, len(others)), thread_name_prefix="m1-probe") as pool:
                results.extend(pool.map(self._probe_replica, others))
        if not results:
            return [
                self.result(
                    "api",
                    "ready",
                    Status.UNHEALTHY,
                    latency_ms=0.0,
                    value=0,
                    unit="replicas",
                    message="no API replica sent a heartbeat lately",
                )
            ]
        failing = sum(1 for result in results if result.status is Status.UNHEALTHY)
        rate = failing / len(results)
        return [
            CheckResult(
                component=r.component,
                measurement=r.measurement,
                status=r.status,
                latency_ms=r.latency_ms,
                observed_value=r.observed_value,
                observed_unit=r.observed_unit,
                message=r.message,
                error_rate=rate,
                recommendations=r.recommendations,
                time=r.time,
            )
            for r in results
        ]

    def _probe_replica(self, replica: ReplicaStatus) -> CheckResult:
        url = f"{replica.base_url.rstrip('/')}/health/ready"
        started = time.perf_counter()
        try:
            response = self._http.get(url)
        except httpx.HTTPError as error:
            return self._api_result(
                replica.id, False, _ms_since(started), f"unreachable: {_error_text(error)}"
            )
        latency = _ms_since(started)
        if response.status_code == 200:
            return self._api_result(replica.id, True, latency, "ready")
        return self._api_result(
            replica.id, False, latency, f"answered {response.status_code}: not ready"
        )

    def _api_result(self, replica: str, ready: bool, latency: float, detail: str) -> CheckResult:
        status = self._latency_status(latency) if ready else Status.UNHEALTHY
        return self.result(
            "api",
            "responseTime",
            status,
            latency_ms=latency,
            value=round(latency, 3),
            unit="ms",
            message=f"replica {replica}: {detail} ({latency:.1f} ms)",
        )

    def check_memory(self) -> list[CheckResult]:
        """The machine's memory used, and each replica's RSS as a share of the machine's memory
        (this replica's measured now, the others' from their heartbeats)."""
        t = self.thresholds
        started = time.perf_counter()
        machine = psutil.virtual_memory()
        latency = _ms_since(started)
        results = [
            self.result(
                "memory",
                "utilization",
                _grade(machine.percent, t.memory_degraded_pct, t.memory_unhealthy_pct),
                latency_ms=latency,
                value=round(machine.percent, 2),
                unit="percent",
                message=f"machine: {machine.percent:.1f} % of {machine.total} bytes used",
            )
        ]
        figures, unknown = self._figures()
        for replica_id, replica in figures:
            rss = replica.rss_bytes
            percent = 100.0 * rss / machine.total if machine.total else 0.0
            results.append(
                self.result(
                    "memory",
                    "rss",
                    _grade(percent, t.memory_degraded_pct, t.memory_unhealthy_pct),
                    latency_ms=0.0,
                    value=rss,
                    unit="bytes",
                    message=f"replica {replica_id}: RSS {rss} bytes, {percent:.1f} % of the machine",
                )
            )
        if unknown is not None:
            results.append(self._unknown("memory", "rss", "bytes", unknown))
        return results

    def check_prefect(self) -> list[CheckResult]:
        """The Prefect API answers ``/health``; the age of the last completed health-check run
        (None, not a failure, when there is none yet)."""
        if self.prefect_api_url is None:
            return [
                self.result(
                    "prefect",
                    "responseTime",
                    Status.UNHEALTHY,
                    latency_ms=0.0,
                    value=None,
                    unit="ms",
                    message="no Prefect API URL known",
                )
            ]
        where = redact_url(self.prefect_api_url)
        client = self._http
        started = time.perf_counter()
        try:
            response = client.get(f"{self.prefect_api_url}/health")
        except httpx.HTTPError as error:
            return [
                self.result(
                    "prefect",
                    "responseTime",
                    Status.UNHEALTHY,
                    latency_ms=_ms_since(started),
                    value=None,
                    unit="ms",
                    message=f"Prefect API {where} unreachable: {_error_text(error)}",
                )
            ]
        latency = _ms_since(started)
        if response.status_code != 200:
            return [
                self.result(
                    "prefect",
                    "responseTime",
                    Status.UNHEALTHY,
                    latency_ms=latency,
                    value=round(latency, 3),
                    unit="ms",
                    message=f"Prefect API {where} answered {response.status_code}",
                )
            ]
        results = [
            self.result(
                "prefect",
                "responseTime",
                self._latency_status(latency),
                latency_ms=latency,
                value=round(latency, 3),
                unit="ms",
                message=f"Prefect API {where} answered in {latency:.1f} ms",
            )
        ]
        results.append(self._last_health_run(client))
        results.append(self._runner_poll(client))
        return results

    def _prefect_age(
        self, measurement: str, what: str, read: Callable[[], str | None]
    ) -> tuple[float | None, float] | CheckResult:
        """(seconds since the timestamp ``read`` fetches from Prefect, None when it has none;
        the call's ms); when Prefect cannot say, a healthy result with a null value: the
        responseTime measurement grades reachability, these only the age."""
        started = time.perf_counter()
        try:
            stamp = read()
            age = (
                None
                if not stamp
                else (datetime.now(UTC) - datetime.fromisoformat(stamp)).total_seconds()
            )
        except (httpx.HTTPError, ValueError, TypeError, AttributeError) as error:
            message = f"{what} unknown: {_error_text(error)}"
            return self._age_result(measurement, Status.HEALTHY, _ms_since(started), None, message)
        return age, _ms_since(started)

    def _age_result(
        self, measurement: str, status: Status, latency: float, age: float | None, message: str
    ) -> CheckResult:
        value = None if age is None else round(age, 1)
        return self.result(
            "prefect", measurement, status, latency_ms=latency, value=value, unit="s",
            message=message,
        )  # fmt: skip

    def _last_health_run(self, client: httpx.Client) -> CheckResult:
        """Age of the newest completed health-check flow run, read with one REST call."""
        body = {
            "flows": {"name": {"any_": [HEALTH_FLOW_NAME]}},
            "flow_runs": {"state": {"type": {"any_": ["COMPLETED"]}}},
            "sort": "END_TIME_DESC",
            "limit": 1,
        }

        def read() -> str | None:
            response = client.post(f"{self.prefect_api_url}/flow_runs/filter", json=body)
            response.raise_for_status()
            runs = response.json()
            return runs[0].get("end_time") if isinstance(runs, list) and runs else None

        found = self._prefect_age("lastHealthRun", "age of the last health run", read)
        if isinstance(found, CheckResult):
            return found
        age, latency = found
        if age is None:
            message = f"no completed {HEALTH_FLOW_NAME} run yet"
            return self._age_result("lastHealthRun", Status.HEALTHY, latency, None, message)
        period = self.thresholds.period_s
        return self._age_result(
            "lastHealthRun",
            _grade(age, 3 * period, 10 * period),
            latency,
            age,
            f"last {HEALTH_FLOW_NAME} run completed {age:.0f} s ago (period {period} s)",
        )

    def _runner_poll(self, client: httpx.Client) -> CheckResult:
        """Age of the health-check deployment's last poll: Prefect stamps ``last_polled`` each
        time the runner (`m1 up`) or a worker asks for its runs, so a runner gone or stuck shows
        here, while the flow it no longer runs cannot say so. Degraded past 3 polls (+5 s),
        unhealthy past 6 (+10 s) of ``M1_PREFECT_RUNNER_POLL_S``; no such deployment: healthy."""
        poll_s = self.settings.prefect.runner_poll_s
        missing: list[bool] = []

        def read() -> str | None:
            response = client.get(f"{self.prefect_api_url}/deployments/name/{HEALTH_DEPLOYMENT}")
            if response.status_code == 404:
                missing.append(True)
                return None
            response.raise_for_status()
            polled = response.json().get("last_polled")
            return None if polled is None else str(polled)

        found = self._prefect_age("runnerPoll", f"last poll of {HEALTH_DEPLOYMENT}", read)
        if isinstance(found, CheckResult):
            return found
        age, latency = found
        if missing:
            message = f"no {HEALTH_DEPLOYMENT} deployment: nothing schedules health runs"
            return self._age_result("runnerPoll", Status.HEALTHY, latency, None, message)
        if age is None:
            message = f"{HEALTH_DEPLOYMENT} never polled: no runner or worker serves it yet"
            return self._age_result("runnerPoll", Status.DEGRADED, latency, None, message)
        return self._age_result(
            "runnerPoll",
            _grade(age, 3 * poll_s + 5, 6 * poll_s + 10),
            latency,
            age,
            f"{HEALTH_DEPLOYMENT} last polled by a runner or worker {age:.0f} s ago "
            f"(polls every {poll_s} s)",
        )

    def check_revocation_sync(self) -> list[CheckResult]:
        """Each replica's age of its last revocation resync: degraded past half the staleness
        bound (or two resync periods, if longer), unhealthy past the bound (it denies then)."""
        settings = self.settings.revocation
        if not settings.enabled:
            return [
                self.result(
                    "revocation_sync",
                    "age",
                    Status.HEALTHY,
                    latency_ms=0.0,
                    value=None,
                    unit="s",
                    message="revocation checks disabled (M1_REVOCATION_ENABLED=false)",
                )
            ]
        degraded = max(2 * settings.resync_s, settings.max_staleness_s / 2)
        results: list[CheckResult] = []
        replicas, unknown = self._figures()
        for replica_id, figures in replicas:
            age = figures.revocation_sync_age_s
            if age is None:
                status, message = Status.UNHEALTHY, "never synced its revocations"
            else:
                status = _grade(age, degraded, settings.max_staleness_s)
                message = (
                    f"last resync {age:.1f} s ago (denies past {settings.max_staleness_s:g} s)"
                )
            results.append(
                self.result(
                    "revocation_sync",
                    "age",
                    status,
                    latency_ms=0.0,
                    value=None if age is None else round(age, 3),
                    unit="s",
                    message=f"replica {replica_id}: {message}",
                )
            )
        if unknown is not None or not results:
            results.append(self._unknown("revocation_sync", "age", "s", unknown))
        return results

    def check_event_store(self) -> list[CheckResult]:
        """Each replica's store lag (against the lag thresholds) and dropped events (degraded
        when the count grew since this checker last looked)."""
        t = self.thresholds
        results: list[CheckResult] = []
        replicas, unknown = self._figures()
        for replica_id, figures in replicas:
            lag = figures.store_lag_s or 0.0
            results.append(
                self.result(
                    "event_store",
                    "lag",
                    _grade(lag, t.lag_degraded_s, t.lag_unhealthy_s),
                    latency_ms=0.0,
                    value=round(lag, 3),
                    unit="s",
                    message=f"replica {replica_id}: store {lag:.2f} s behind",
                )
            )
            with self._drops_lock:
                before = self._drops.get(replica_id)
                self._drops[replica_id] = figures.queue_drops
            grew = before is not None and figures.queue_drops > before
            results.append(
                self.result(
                    "event_store",
                    "droppedEvents",
                    Status.DEGRADED if grew else Status.HEALTHY,
                    latency_ms=0.0,
                    value=figures.queue_drops,
                    unit="events",
                    message=f"replica {replica_id}: {figures.queue_drops} events dropped since start"
                    + (
                        f", {figures.queue_drops - (before or 0)} since the last check"
                        if grew
                        else ""
                    ),
                )
            )
        if unknown is not None or not results:
            results.append(self._unknown("event_store", "lag", "s", unknown))
        return results

    def check_policy_engine(self) -> list[CheckResult]:
        """p99 of ``policy_decisions.checkMs`` over the error window, from the event store."""
        if self.metrics is None:
            return [
                self.result(
                    "policy_engine",
                    "p99",
                    Status.HEALTHY,
                    latency_ms=0.0,
                    value=None,
                    unit="ms",
                    message="no event store to read decisions from",
                )
            ]
        window = max(1, round(self.thresholds.error_window_s))
        query = {
            "metric": "policy_decisions",
            "timeRange": f"{window}s",
            "aggregations": ["p99", "count"],
        }
        started = time.perf_counter()
        try:
            rows = self.metrics.run_query(query).rows
        except BusyError as error:
            return [
                self.result(
                    "policy_engine",
                    "p99",
                    Status.DEGRADED,
                    latency_ms=_ms_since(started),
                    value=None,
                    unit="ms",
                    message=f"query refused: {_error_text(error)}",
                )
            ]
        latency = _ms_since(started)
        count = int(rows[0].get("count") or 0) if rows else 0
        p99 = rows[0].get("p99") if rows and count else None
        if p99 is None:
            return [
                self.result(
                    "policy_engine",
                    "p99",
                    Status.HEALTHY,
                    latency_ms=latency,
                    value=None,
                    unit="ms",
                    message=f"no policy decisions in the last {window} s",
                )
            ]
        return [
            self.result(
                "policy_engine",
                "p99",
                self._latency_status(float(p99)),
                latency_ms=latency,
                value=round(float(p99), 4),
                unit="ms",
                message=f"p99 decision {float(p99):.3f} ms over {count} decisions in {window} s",
            )
        ]

    def _figures(self) -> tuple[list[tuple[str, ReplicaFigures]], str | None]:
        """This replica's figures now, the others' from their heartbeats; and why the others
        are unknown, if they are."""
        out: list[tuple[str, ReplicaFigures]] = []
        if self.this is not None:
            out.append((self.this.replica_id, self.this.figures()))
        others, unknown = self._others_or_error()
        for replica in others:
            out.append(
                (
                    replica.id,
                    ReplicaFigures(
                        cache_backend=replica.cache_backend,
                        revocation_sync_age_s=replica.revocation_sync_age_s,
                        store_lag_s=replica.store_lag_s,
                        rss_bytes=replica.rss_bytes,
                        queue_drops=replica.queue_drops,
                    ),
                )
            )
        return out, unknown

    def _unknown(self, component: str, measurement: str, unit: str, why: str | None) -> CheckResult:
        """No figure to grade: degraded when the heartbeats could not be read (the database
        check fails then, not this component); healthy when no replica is alive (check_api
        fails then)."""
        return self.result(
            component,
            measurement,
            Status.HEALTHY if why is None else Status.DEGRADED,
            latency_ms=0.0,
            value=None,
            unit=unit,
            message=why or "no live API replica to read (see api)",
        )


def run_full_health_check(
    checker: HealthChecker,
    *,
    components: Sequence[str] | None = None,
    timeout_s: float | None = None,
) -> HealthReport:
    """Every check (or those of ``components``) at once, each within ``timeout_s`` (default
    ``M1_HEALTH_CHECK_TIMEOUT_S``); worst wins. Never raises: a check that raised or did not
    finish in time is an unhealthy result naming the error class or the timeout."""
    timeout = checker.thresholds.check_timeout_s if timeout_s is None else timeout_s
    chosen = {
        name: check
        for name, check in checker.checks().items()
        if components is None or name in components
    }
    executor = ThreadPoolExecutor(max_workers=max(1, len(chosen)), thread_name_prefix="m1-check")
    try:
        futures = {name: executor.submit(check) for name, check in chosen.items()}
        deadline = time.monotonic() + timeout
        results: list[CheckResult] = []
        for name, future in futures.items():
            try:
                results.extend(future.result(timeout=max(0.0, deadline - time.monotonic())))
            except FutureTimeout:
                future.cancel()
                results.append(
                    _failed(
                        checker,
                        name,
                        f"did not finish within {timeout:g} s (TimeoutError)",
                        timeout * 1000,
                    )
                )
            except Exception as error:  # a check's own failure is its finding, never ours
                logger.warning("health check %s raised %s", name, _error_text(error))
                logger.debug("health check %s raised", name, exc_info=True)
                results.append(_failed(checker, name, f"raised {_error_text(error)}", 0.0))
    finally:
        executor.shutdown(wait=False, cancel_futures=True)  # a hung check must not hold us
    return HealthReport(checks=tuple(results))


def _failed(checker: HealthChecker, component: str, why: str, latency_ms: float) -> CheckResult:
    return checker.result(
        component,
        "check",
        Status.UNHEALTHY,
        latency_ms=latency_ms,
        value=None,
        unit="",
        message=f"check_{component} {why}",
    )
