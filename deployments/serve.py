"""Serve every deployment of ``prefect.yaml`` from one long-running process (what `m1 up` runs).

Each flow run is its own subprocess started by Prefect's runner; this process only polls for work.
In production, workers in a work pool run the same deployments instead (`prefect deploy --all`).
Before serving, runs of M1's deployments left Running or Pending by a runner that died (with a
crashed `m1 up`) are marked Crashed, so deployment concurrency limits cannot stay wedged.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import psutil
from prefect import serve
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterTags,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import (
    ConcurrencyLimitConfig,
    ConcurrencyLimitStrategy,
    StateType,
)
from prefect.deployments.runner import RunnerDeployment
from prefect.flows import Flow, load_flow_from_entrypoint
from prefect.schedules import Cron, Interval, Schedule
from prefect.states import Crashed
from prefect.types.entrypoint import EntrypointType

from deployments.prefect_api import prefect_client
from deployments.prefect_yaml import (
    DeploymentSpec,
    ScheduleSpec,
    apply_settings,
    load_deployment_specs,
)
from m1lib.logs import configure_logging
from m1lib.settings import Settings, get_settings

logger = logging.getLogger("m1.runner")
M1_TAG = "m1"
ABANDONED = [StateType.RUNNING, StateType.PENDING, StateType.CANCELLING]
PREFETCH_S = 10.0  # Prefect's runner default


def _schedule(spec: ScheduleSpec) -> Schedule:
    if spec.cron:
        return Cron(spec.cron, timezone=spec.timezone, active=spec.active)
    if spec.interval_s is not None:
        return Interval(spec.interval_s, timezone=spec.timezone, active=spec.active)
    raise ValueError("a schedule needs `cron` or `interval`")


def to_runner_deployment(spec: DeploymentSpec) -> RunnerDeployment:
    flow: Flow[..., Any] = load_flow_from_entrypoint(spec.entrypoint)
    concurrency: Any = None
    if spec.concurrency_limit is not None:
        concurrency = ConcurrencyLimitConfig(
            limit=spec.concurrency_limit,
            collision_strategy=ConcurrencyLimitStrategy(spec.collision_strategy),
            grace_period_seconds=spec.grace_period_seconds,
        )
    deployment = flow.to_deployment(
        name=spec.name,
        description=spec.description,
        tags=spec.tags,
        parameters=spec.parameters,
        schedules=[_schedule(item) for item in spec.schedules],
        concurrency_limit=concurrency,
        enforce_parameter_schema=spec.enforce_parameter_schema,
        entrypoint_type=EntrypointType.MODULE_PATH,
    )
    assert isinstance(deployment, RunnerDeployment)  # called outside an event loop: not awaitable
    deployment.entrypoint = spec.entrypoint  # as prefect.yaml names it, for workers too
    return deployment


def served_specs(path: Path, settings: Settings) -> list[DeploymentSpec]:
    """The deployments of ``path`` as this configuration serves them (``apply_settings``: the
    health check every ``M1_HEALTH_PERIOD_S``)."""
    return apply_settings(load_deployment_specs(path), settings)


def served_deployments(path: Path, settings: Settings) -> list[RunnerDeployment]:
    return [to_runner_deployment(spec) for spec in served_specs(path, settings)]


def prefetch_seconds(specs: list[DeploymentSpec]) -> float:
    """How far ahead the runner submits scheduled runs: Prefect's 10 s, but less than half the
    shortest interval served. The runner submits every run due within the prefetch at once, so
    with ``M1_HEALTH_PERIOD_S`` 10 it submitted two health runs together and the deployment's
    CANCEL_NEW limit cancelled the second: one run every 20 s instead of 10."""
    intervals = [s.interval_s for spec in specs for s in spec.schedules if s.interval_s]
    return min([PREFETCH_S, *(interval / 2 for interval in intervals)])


def crash_abandoned_runs(batch: int = 200) -> int:
    """Mark Crashed the runs of M1's deployments that a runner which is gone left unfinished."""
    state = FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=ABANDONED)))
    tagged = DeploymentFilter(tags=DeploymentFilterTags(all_=[M1_TAG]))
    crashed = 0
    with prefect_client() as client:
        while True:
            runs = client.read_flow_runs(
                flow_run_filter=state, deployment_filter=tagged, limit=batch
            )
            for run in runs:
                client.set_flow_run_state(
                    run.id,
                    Crashed(message="m1 up restarted: the runner of this flow run is gone"),
                    force=True,
                )
                logger.warning("marked flow run %s (%s) as crashed", run.name, run.id)
            crashed += len(runs)
            if len(runs) < batch:
                return crashed


def _kill_tree_when_orphaned(poll_s: float = 0.5) -> None:
    """If `m1 up` dies without stopping us, take our flow-run subprocesses down with us.

    PR_SET_PDEATHSIG reaches only `m1 up`'s direct children; flow runs are our children, so this
    process must clean them up itself, or a crash of `m1 up` leaves them running.
    """
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        children = psutil.Process().children(recursive=True)
        for child in children:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.terminate()
        _, alive = psutil.wait_procs(children, timeout=5)
        for child in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()
        os._exit(1)

    threading.Thread(target=watch, name="m1-orphan-watchdog", daemon=True).start()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--file", type=Path, required=True, help="the prefect.yaml to serve")
    args = parser.parse_args(argv)
    _kill_tree_when_orphaned()
    settings = get_settings()
    configure_logging(settings)
    specs = served_specs(args.file, settings)
    deployments = [to_runner_deployment(spec) for spec in specs]
    crashed = crash_abandoned_runs()
    if crashed:
        logger.warning("%d abandoned flow runs marked crashed", crashed)
    serve(*deployments, print_starting_message=True, prefetch_seconds=prefetch_seconds(specs))


if __name__ == "__main__":
    main()
