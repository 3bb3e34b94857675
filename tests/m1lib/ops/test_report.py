"""The shared vocabulary of health checks: statuses, worst-wins, the health+json form."""

from __future__ import annotations

from datetime import UTC, datetime

from m1lib.ops.report import CheckResult, HealthReport, Status, runbook, worst

T = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def check(component: str, status: Status, measurement: str = "responseTime") -> CheckResult:
    return CheckResult(component, measurement, status, 1.5, 1.5, "ms", "ok", time=T)


def test_worst_wins_and_an_empty_report_is_healthy() -> None:
    assert worst([]) is Status.HEALTHY
    assert worst([Status.DEGRADED, Status.HEALTHY]) is Status.DEGRADED
    assert worst([Status.DEGRADED, Status.UNHEALTHY, Status.HEALTHY]) is Status.UNHEALTHY
    assert HealthReport(()).status is Status.HEALTHY
    assert Status.UNHEALTHY.failing
    assert not Status.DEGRADED.failing


def test_health_json_keys_checks_by_component_and_measurement() -> None:
    report = HealthReport(
        (
            check("database", Status.HEALTHY),
            check("redis", Status.DEGRADED),
            check("redis", Status.HEALTHY, "memory"),
        ),
        time=T,
    )
    body = report.health_json()
    assert body["status"] == "warn"
    assert body["time"] == "2026-12-03T12:00:00Z"
    assert set(body["checks"]) == {"database:responseTime", "redis:responseTime", "redis:memory"}
    entry = body["checks"]["redis:responseTime"][0]
    assert entry["status"] == "warn"
    assert entry["observedValue"] == 1.5
    assert entry["observedUnit"] == "ms"
    assert report.by_component() == {"database": Status.HEALTHY, "redis": Status.DEGRADED}
    assert runbook("redis") == "docs/runbooks/redis.md"
