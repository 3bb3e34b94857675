"""Validate config: is this deployment's configuration fit for its environment? Report only.

Runs the configuration validator (m1lib/ops/config_validator.py) on the configuration the flow
run itself sees, with the checks of the profile, and publishes every finding as a table artifact
with a markdown report. It changes nothing. Strict (the default) fails the run on a critical or
high finding, so a deployment pipeline can gate on it; ``dry_run`` reports and never fails.
"""

from __future__ import annotations

from typing import Any, Literal

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from pydantic import BaseModel, Field

from flows.shape import FlowReport, publish
from tasks.config import ConfigOutcome, check_configuration

ARTIFACT_KEY = "config-validation"
MARKDOWN_KEY = "config-validation-report"


class ConfigRejectedError(Exception):
    """The configuration failed validation (strict: a critical or high finding; lenient: a
    critical one); raised after the artifacts are published, so the run ends Failed."""


class ValidateConfigParams(BaseModel):
    profile: Literal["local", "staging", "production"] | None = Field(
        None,
        description="Which rules apply; empty: from M1_ENV (development is local).",
    )
    strict: bool = Field(
        True, description="Fail on critical or high findings; off: on critical only."
    )
    dry_run: bool = Field(False, description="Report everything and never fail the run.")
    offline: bool = Field(
        False, description="Static checks only: connect to no database, Redis or HTTP service."
    )
    timeout_s: float = Field(
        3.0, gt=0, le=60, description="Time allowed to each live probe, in seconds."
    )


@flow(name="validate-config", log_prints=True)
def validate_config(params: ValidateConfigParams | None = None) -> dict[str, Any]:
    """Validate M1's configuration for its environment and report every finding.

    Run it before promoting a deployment (staging, production) and after changing M1_*
    variables: static checks of every variable (types, ranges, formats, production posture,
    secrets) and, unless offline, live checks of the database and its migrations, Redis, the
    Prefect API, M1's API and the TLS certificate. Changes nothing; never shows a secret.
    """
    params = params or ValidateConfigParams()
    outcome = check_configuration(
        params.profile,
        live=not params.offline,
        strict=params.strict,
        dry_run=params.dry_run,
        timeout_s=params.timeout_s,
    )
    create_markdown_artifact(
        key=MARKDOWN_KEY,
        markdown=outcome["markdown"],
        description=f"Configuration validation: {outcome['verdict']['summary']}",
    )
    result = publish(validation_report(outcome, params))
    if not outcome["verdict"]["passed"]:
        raise ConfigRejectedError(outcome["verdict"]["summary"])
    return result


def validation_report(outcome: ConfigOutcome, params: ValidateConfigParams) -> FlowReport:
    """The table of findings, a summary as its description, the run's return value."""
    verdict = outcome["verdict"]
    layers = "static and live" if outcome["live"] else "static only (offline)"
    description = (
        f"Configuration validated as **{outcome['profile']}** ({layers} checks): "
        f"**{verdict['summary']}**. Full report: artifact `{MARKDOWN_KEY}`."
    )
    return FlowReport(
        artifact_key=ARTIFACT_KEY,
        table=outcome["table"],
        description=description,
        log=f"validate-config ({outcome['profile']}): {verdict['summary']}",
        result={
            "profile": outcome["profile"],
            "live": outcome["live"],
            "strict": params.strict,
            "dry_run": params.dry_run,
            "verdict": verdict,
            "counts": outcome["counts"],
            "findings": outcome["table"],
        },
    )
