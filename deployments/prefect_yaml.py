"""Reading ``prefect.yaml``: the one description of M1's deployments, for `m1 up` and for workers.

`prefect deploy --all` reads the same file, so serving locally and running on workers cannot drift.
The file ships inside this package (the checkout's top-level ``prefect.yaml`` links to it) and names
flows by module path, so an installed M1 serves its deployments from any directory.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml

from m1lib.settings import Settings

SHIPPED_FILE = Path(__file__).with_name("prefect.yaml")
HEALTH_DEPLOYMENT = "health-check"
_MODULE_PATH = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)+$")


@dataclass(frozen=True)
class ScheduleSpec:
    cron: str | None = None
    interval_s: float | None = None
    timezone: str | None = None
    active: bool = True


@dataclass(frozen=True)
class DeploymentSpec:
    name: str
    entrypoint: str
    description: str
    tags: list[str] = field(default_factory=list)
    parameters: dict[str, Any] = field(default_factory=dict)
    schedules: list[ScheduleSpec] = field(default_factory=list)
    concurrency_limit: int | None = None
    collision_strategy: str = "ENQUEUE"
    grace_period_seconds: int | None = None
    enforce_parameter_schema: bool = True

    @property
    def module(self) -> str:
        return self.entrypoint.rsplit(".", 1)[0]

    @property
    def function(self) -> str:
        return self.entrypoint.rsplit(".", 1)[1]


class DeploymentFileError(ValueError):
    """``prefect.yaml`` does not describe deployments M1 can serve; names the entry and field."""


def _interval_seconds(value: Any) -> float:
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, timedelta):
        return value.total_seconds()
    raise DeploymentFileError(f"schedules[].interval: {value!r} is not a number of seconds")


def deployments_file(settings: Settings) -> Path:
    """The file `m1 up` serves: ``M1_PREFECT_DEPLOYMENTS_FILE``, or the one shipped with M1."""
    return (settings.prefect.deployments_file or SHIPPED_FILE).resolve()


def load_deployment_specs(path: Path = SHIPPED_FILE) -> list[DeploymentSpec]:
    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise DeploymentFileError(f"{path}: cannot read ({error})") from error
    entries = (document or {}).get("deployments")
    if not isinstance(entries, list) or not entries:
        raise DeploymentFileError(f"{path}: no `deployments:` list")
    specs = []
    for index, entry in enumerate(entries):
        where = f"{path.name}: deployments[{index}]"
        for required in ("name", "entrypoint", "description"):
            if not entry.get(required):
                raise DeploymentFileError(f"{where}.{required}: missing")
        if not _MODULE_PATH.match(str(entry["entrypoint"])):
            raise DeploymentFileError(
                f"{where}.entrypoint: {entry['entrypoint']!r} is not a module path; write "
                "package.module.flow (e.g. flows.database_setup.database_setup), which imports "
                "wherever M1 is installed, unlike a file path"
            )
        schedules = [
            ScheduleSpec(
                cron=item.get("cron"),
                interval_s=_interval_seconds(item["interval"]) if "interval" in item else None,
                timezone=item.get("timezone"),
                active=bool(item.get("active", True)),
            )
            for item in entry.get("schedules") or []
        ]
        concurrency = entry.get("concurrency_limit")
        limit: int | None
        strategy, grace = "ENQUEUE", None
        if isinstance(concurrency, dict):
            limit = int(concurrency["limit"])
            strategy = str(concurrency.get("collision_strategy", "ENQUEUE"))
            grace = concurrency.get("grace_period_seconds")
        else:
            limit = int(concurrency) if concurrency is not None else None
        specs.append(
            DeploymentSpec(
                name=entry["name"],
                entrypoint=entry["entrypoint"],
                description=" ".join(str(entry["description"]).split()),
                tags=list(entry.get("tags") or []),
                parameters=dict(entry.get("parameters") or {}),
                schedules=schedules,
                concurrency_limit=limit,
                collision_strategy=strategy,
                grace_period_seconds=int(grace) if grace is not None else None,
                enforce_parameter_schema=bool(entry.get("enforce_parameter_schema", True)),
            )
        )
    return specs


def apply_settings(specs: list[DeploymentSpec], settings: Settings) -> list[DeploymentSpec]:
    """The deployments as `m1 up` serves them: the health check's interval schedules run every
    ``M1_HEALTH_PERIOD_S`` (prefect.yaml holds the default, 60 s, which workers get)."""
    period = float(settings.health.period_s)
    return [
        replace(
            spec,
            schedules=[
                replace(item, interval_s=period) if item.interval_s is not None else item
                for item in spec.schedules
            ],
        )
        if spec.name == HEALTH_DEPLOYMENT
        else spec
        for spec in specs
    ]
