"""`m1 up` brings back a child that died: the deployment runner killed serves every deployment
again with the same credential, the API killed answers again, each restart is a log line and an
alert on the dashboard, and `GET /api/m1/health` answers through it.

It kills children, so it runs its own `m1 up` (SQLite, no Redis: the supervisor's alerts go to the
API with the runner's key), never the shared one.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psutil
import pytest

from tests.e2e.live import EXPECTED_DEPLOYMENTS, LiveM1
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture
def own_m1(tmp_path: Path) -> Iterator[LiveM1]:
    live = LiveM1(workdir=tmp_path / "restarts")
    try:
        live.start()
        yield live
        assert live.stop() == 0, live.output()[-4000:]
        assert live.alive_descendants() == [], "m1 up left processes behind"
    finally:
        live.kill_everything_left()


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


def test_killed_runner_and_api_come_back_with_a_log_line_and_an_alert(own_m1: LiveM1) -> None:
    live = own_m1
    key = live.admin_key()
    assert key is not None
    headers = {"Authorization": f"Bearer {key}"}

    runner = _child(live, "deployments.serve")
    credential = runner.environ()["M1_API_KEY"]
    runner_killed_at = live.started_at = datetime.now(UTC)  # served again: polled after it
    runner.kill()
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

    health = httpx.get(f"{live.api_url}/api/m1/health", headers=headers, timeout=30)
    assert health.status_code in {200, 503}, health.text  # a fresh M1 has no health run yet
    assert health.headers["content-type"].startswith("application/health+json")
    (prefect,) = health.json()["checks"]["prefect:responseTime"]
    assert prefect["status"] == "pass", prefect

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
