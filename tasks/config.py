"""The configuration validator as a Prefect task: the run's own configuration, judged once.

It returns the report's outputs for the chosen mode, already masked, never the report object:
no secret value can reach a task result, even where results are persisted.
"""

from __future__ import annotations

from typing import Any, TypedDict

from prefect import task
from prefect.cache_policies import NO_CACHE

from m1lib.ops.config_validator import validate_config


class ConfigOutcome(TypedDict):
    profile: str
    live: bool
    verdict: dict[str, Any]  # Verdict.to_json()
    counts: dict[str, int]
    table: list[dict[str, str]]  # one row per finding, worst first
    markdown: str
    text: str


@task(name="validate-configuration", cache_policy=NO_CACHE)
def check_configuration(
    profile: str | None, *, live: bool, strict: bool, dry_run: bool, timeout_s: float
) -> ConfigOutcome:
    """Validate the ``M1_*`` configuration this run sees (its environment and env file).

    Not retried: a probe that fails is a finding, not an error of the task.
    """
    report = validate_config(profile=profile, live=live, timeout_s=timeout_s)
    data = report.to_json(strict, dry_run)
    return {
        "profile": data["profile"],
        "live": data["live"],
        "verdict": data["verdict"],
        "counts": data["counts"],
        "table": report.table(),
        "markdown": report.to_markdown(strict, dry_run),
        "text": report.to_text(strict, dry_run),
    }
