"""What the Prefect UI does, through the same REST API: find deployments, press Run, read results."""

from __future__ import annotations

import time
from typing import Any

import httpx

FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def deployment_by_name(api_url: str, name: str) -> dict[str, Any]:
    found = (
        httpx.post(
            f"{api_url}/deployments/filter",
            json={"deployments": {"name": {"any_": [name]}}},
            timeout=10,
        )
        .raise_for_status()
        .json()
    )
    assert found, f"deployment {name} not found"
    return dict(found[0])


def run_deployment(
    api_url: str, deployment_id: str, parameters: dict[str, Any] | None = None
) -> str:
    """Like the UI's Run button: create a flow run from the deployment."""
    body = {"parameters": parameters or {}}
    run = (
        httpx.post(f"{api_url}/deployments/{deployment_id}/create_flow_run", json=body, timeout=10)
        .raise_for_status()
        .json()
    )
    return str(run["id"])


def wait_for_final_state(api_url: str, run_id: str, timeout_s: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        run = httpx.get(f"{api_url}/flow_runs/{run_id}", timeout=10).raise_for_status().json()
        if run["state"]["type"] in FINAL:
            return dict(run)
        assert time.monotonic() < deadline, f"flow run still {run['state']['type']}"
        time.sleep(0.5)


def artifacts_of(api_url: str, run_id: str) -> list[dict[str, Any]]:
    body = {"artifacts": {"flow_run_id": {"any_": [run_id]}}}
    return list(
        httpx.post(f"{api_url}/artifacts/filter", json=body, timeout=10).raise_for_status().json()
    )
