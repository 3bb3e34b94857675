"""`m1 up` stops with no orphan, and after a crash starts again and frees abandoned runs."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e import prefect_api
from tests.e2e.live import LiveM1

pytestmark = pytest.mark.e2e


def _force_state(api_url: str, run_id: str, state_type: str) -> None:
    httpx.post(
        f"{api_url}/flow_runs/{run_id}/set_state",
        json={"state": {"type": state_type, "name": state_type.title()}, "force": True},
        timeout=10,
    ).raise_for_status()


def test_crash_then_restart_marks_abandoned_runs_crashed_and_sigterm_leaves_no_orphan(
    tmp_path: Path,
) -> None:
    live = LiveM1(workdir=tmp_path / "lifecycle")
    try:
        live.start()
        api = live.prefect_api_url
        deployment = prefect_api.deployment_by_name(api, "database-setup")
        # A run that a runner had picked up when it died: left Running forever.
        run_id = (
            httpx.post(
                f"{api}/deployments/{deployment['id']}/create_flow_run",
                json={"state": {"type": "SCHEDULED", "name": "Scheduled"}, "parameters": {}},
                timeout=10,
            )
            .raise_for_status()
            .json()["id"]
        )
        _force_state(api, run_id, "RUNNING")

        # Crash: the supervisor dies without cleaning up; its children follow (PDEATHSIG).
        live.stop(signal.SIGKILL)
        deadline = time.monotonic() + 30
        while live.alive_descendants() and time.monotonic() < deadline:
            time.sleep(0.3)
        assert live.alive_descendants() == []

        live.start()
        run = httpx.get(f"{live.prefect_api_url}/flow_runs/{run_id}", timeout=10).json()
        assert run["state"]["type"] == "CRASHED"
        assert "restarted" in run["state"]["message"]
        assert live.admin_key() is None  # the key is printed on the first start only

        assert live.stop(signal.SIGTERM) == 0
        assert live.alive_descendants() == []
    finally:
        live.kill_everything_left()
