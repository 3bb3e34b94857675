"""Running a flow body through Prefect in a test, and reading back what the run left.

Needs the ``prefect_harness`` fixture (tests/conftest.py); tests get :func:`run_flow` through
the ``run_flow`` fixture, which starts it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from prefect import Flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId


@dataclass(frozen=True)
class FlowRun:
    """A finished flow run: its return value and its artifacts (by key), read from the server."""

    result: Any
    artifacts: dict[str, Any]

    def table(self, key: str) -> list[dict[str, Any]]:
        data = self.artifacts[key].data
        return json.loads(data) if isinstance(data, str) else data  # type: ignore[no-any-return]

    def description(self, key: str) -> str:
        return str(self.artifacts[key].description)


def run_flow(flow: Flow[..., Any], *args: Any, **kwargs: Any) -> FlowRun:
    """Run ``flow``; raise what the run raised, else answer its result and artifacts."""
    state = flow(*args, return_state=True, **kwargs)
    result = state.result()
    assert state.is_completed(), state
    runs = ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=runs))
    return FlowRun(result=result, artifacts={a.key: a for a in found if a.key})
