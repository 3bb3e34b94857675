"""Staging setup: provision M1 on a PostgreSQL and Redis, and verify an API pointed at them."""

from __future__ import annotations

import re
from typing import Any

from prefect import flow
from pydantic import BaseModel, Field, field_validator

from flows.shape import FlowReport, apply_unless_dry_run, publish
from m1lib.ops.staging import CHANGES, StagingPlan, StagingResult, StepResult, plan_staging
from tasks.staging import apply_staging, preview_staging, verify_api

ARTIFACT_KEY = "staging-setup"
_BLOCK_NAME = r"^[a-z0-9][a-z0-9-]{0,63}$"
_URL_PASSWORD = re.compile(r"//[^/@]*:[^/@]*@")


class StagingSetupParams(BaseModel):
    database_url: str = Field(
        ...,
        description="The staging database, created if missing, without a password (the "
        "password is read from the Secret block named by password_block).",
        min_length=1,
        max_length=2000,
    )
    redis_url: str = Field(
        ..., description="The staging Redis, without a password.", min_length=1, max_length=2000
    )
    env_file: str = Field(
        ".env.staging",
        description="The env file written on the worker (mode 0600); kept unless force.",
        min_length=1,
        max_length=1000,
    )
    admin_url: str | None = Field(
        None,
        description="Where CREATE DATABASE runs; empty: the same server, database postgres.",
        max_length=2000,
    )
    redis_prefix: str = Field(
        "m1", description="M1_REDIS_PREFIX of staging.", pattern=r"^[A-Za-z0-9_.:-]{1,64}$"
    )
    admin_name: str = Field(
        "staging-admin",
        description="The admin credential created once.",
        pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$",
    )
    force: bool = Field(False, description="Rewrite an existing env file (new secrets).")
    dry_run: bool = Field(False, description="Only report what setup would change.")
    api_url: str | None = Field(
        None,
        description="An API running on this staging to verify (/health/live, /health/ready); "
        "the flow starts none.",
        max_length=2000,
    )
    password_block: str = Field(
        "m1-staging-db-password",
        description="Secret block holding the PostgreSQL password (used when it exists).",
        pattern=_BLOCK_NAME,
    )
    admin_key_block: str = Field(
        "m1-staging-admin-key",
        description="Secret block the new admin credential's key is stored in.",
        pattern=_BLOCK_NAME,
    )

    @field_validator("database_url", "redis_url", "admin_url")
    @classmethod
    def _no_password(cls, value: str | None) -> str | None:
        if value is not None and _URL_PASSWORD.search(value):
            raise ValueError(
                "carries a password; parameters are stored in the clear: put it in the "
                "Secret block named by password_block"
            )
        return value


@flow(name="staging-setup", log_prints=True)
def staging_setup(params: StagingSetupParams) -> dict[str, Any]:
    """Provision a staging M1 on the PostgreSQL and Redis given, then verify its API if named.

    Creates the database if missing, migrates it, verifies Redis, writes the env file (fresh
    secrets, mode 0600, kept unless force), checks the tool registry, creates the admin
    credential (its key goes to a Secret block), runs the validator. Run it again at any time:
    a second run changes nothing. It never starts a process; `scripts/setup-staging.sh` does.
    """
    plan = plan_staging(
        database_url=params.database_url,
        redis_url=params.redis_url,
        env_file=params.env_file,
        admin_url=params.admin_url,
        redis_prefix=params.redis_prefix,
        admin_name=params.admin_name,
        force=params.force,
    )
    preview = preview_staging(plan, params.password_block)
    result = apply_unless_dry_run(
        params.dry_run,
        apply=lambda: apply_staging(plan, params.password_block, params.admin_key_block),
        rehearse=lambda: preview,
    )
    api = verify_api(params.api_url) if params.api_url else None
    outcome = publish(staging_report(plan, result, api))
    if not outcome["ok"]:
        raise RuntimeError(f"staging setup failed: {outcome['failed']}")
    return outcome


def staging_report(plan: StagingPlan, result: StagingResult, api: StepResult | None) -> FlowReport:
    """Every step's outcome (and the API's), what changed, how long it took."""
    steps = [*result.steps, *([api] if api else [])]
    failed = [step.step for step in steps if step.outcome.value == "failed"]
    changed = [step.step for step in steps if step.outcome in CHANGES]
    would = [step.step for step in steps if step.outcome.value.startswith("would")]
    where = plan.describe()
    if result.dry_run:
        summary = f"dry run: would change {', '.join(would) or 'nothing'}"
    else:
        summary = f"changed {', '.join(changed) or 'nothing'}"
    state = f"FAILED at {', '.join(failed)}" if failed else "ok"
    return FlowReport(
        artifact_key=ARTIFACT_KEY,
        table=[step.row() for step in steps],
        description=(
            f"Staging on `{where['database']}` and `{where['redis']}` (env file "
            f"`{where['env_file']}`): **{state}** in {result.seconds:.1f} s; {summary}."
        ),
        log=f"staging setup {state} in {result.seconds:.1f} s; {summary}",
        result={
            "ok": not failed,
            "failed": failed,
            "dry_run": result.dry_run,
            "changed": changed,
            "would_change": would,
            "outcomes": {step.step: step.outcome.value for step in steps},
            "steps": [step.row() for step in steps],
            "seconds": round(result.seconds, 3),
            "plan": where,
        },
    )
