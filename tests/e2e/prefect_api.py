"""What the Prefect UI does, through M1's Prefect client: find deployments, press Run, read results.

Every call goes through ``deployments.prefect_api.prefect_client``, so a busy server (503) is
retried with backoff here as everywhere in M1, and waits poll through ``tests.waiting``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    DeploymentFilter,
    DeploymentFilterName,
)
from prefect.client.schemas.objects import Artifact, FlowRun, State
from prefect.client.schemas.responses import DeploymentResponse
from prefect.states import Scheduled

from deployments.prefect_api import prefect_client
from tests.waiting import wait_for

RUN_TIMEOUT_S = 180


def deployment_by_name(api_url: str, name: str) -> DeploymentResponse:
    with prefect_client(api_url) as client:
        found = client.read_deployments(
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[name]))
        )
    assert found, f"deployment {name} not found"
    return found[0]


def run_deployment(
    api_url: str, deployment_id: UUID, parameters: dict[str, Any] | None = None
) -> UUID:
    """Like the UI's Run button: create a flow run from the deployment, to start now."""
    with prefect_client(api_url) as client:
        run = client.create_flow_run_from_deployment(deployment_id, parameters=parameters or {})
    return run.id


def schedule_deployment_later(api_url: str, deployment_id: UUID) -> UUID:
    """A flow run of the deployment scheduled a day ahead: no runner picks it up meanwhile."""
    later: State[Any] = Scheduled(scheduled_time=datetime.now(UTC) + timedelta(days=1))
    with prefect_client(api_url) as client:
        run = client.create_flow_run_from_deployment(deployment_id, state=later)
    return run.id


def read_flow_run(api_url: str, run_id: UUID) -> FlowRun:
    with prefect_client(api_url) as client:
        return client.read_flow_run(run_id)


def force_state(api_url: str, run_id: UUID, state: State[Any]) -> None:
    with prefect_client(api_url) as client:
        client.set_flow_run_state(run_id, state, force=True)


def wait_for_final_state(api_url: str, run_id: UUID) -> FlowRun:
    return wait_for(
        lambda: read_flow_run(api_url, run_id),
        f"flow run {run_id} to reach a final state",
        until=lambda run: run.state is not None and run.state.is_final(),
        show=lambda run: run.state,
        timeout_s=RUN_TIMEOUT_S,
        period_s=0.5,
    )


def artifacts_of(api_url: str, run_id: UUID) -> list[Artifact]:
    with prefect_client(api_url) as client:
        return client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
        )
