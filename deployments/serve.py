"""Serve every deployment of ``prefect.yaml`` from one long-running process (what `m1 up` runs).

Each flow run is its own subprocess started by Prefect's runner; this process only polls for work.
In production, workers in a work pool run the same deployments instead (`prefect deploy --all`).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import threading
import time
from pathlib import Path
from typing import Any

import psutil
from prefect import serve
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.deployments.runner import RunnerDeployment
from prefect.flows import Flow, load_flow_from_entrypoint
from prefect.schedules import Cron, Interval, Schedule
from prefect.types.entrypoint import EntrypointType

from deployments.prefect_yaml import DeploymentSpec, ScheduleSpec, load_deployment_specs


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
    deployments = [to_runner_deployment(spec) for spec in load_deployment_specs(args.file)]
    serve(*deployments, print_starting_message=True)


if __name__ == "__main__":
    main()
