"""staging-setup: the flow under Prefect (dry run, then a run and a second one that changes
nothing, the admin key landing in a Secret block), its parameters, and its pure report."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import ValidationError

from flows.staging_setup import ARTIFACT_KEY, StagingSetupParams, staging_report, staging_setup
from m1lib import auth
from m1lib.db.session import Database
from m1lib.ops.staging import Outcome, StagingResult, StepResult, plan_staging
from m1lib.settings import Settings
from tests.conftest import pg_database_exists
from tests.flow_runs import FlowRun


def test_dry_run_then_run_then_a_second_run_that_changes_nothing(
    unborn_pg_url: str,
    shared_redis_url: str,
    redis_prefix: str,
    tmp_path: Path,
    run_flow: Callable[..., FlowRun],
) -> None:
    from prefect.blocks.system import Secret

    block = f"m1-staging-admin-key-{uuid.uuid4().hex[:8]}"
    params = {
        "database_url": unborn_pg_url,
        "redis_url": shared_redis_url,
        "redis_prefix": redis_prefix,
        "env_file": str(tmp_path / ".env.staging"),
        "admin_key_block": block,
    }
    name = unborn_pg_url.rsplit("/", 1)[1]

    dry = run_flow(staging_setup, StagingSetupParams(**params, dry_run=True))
    assert dry.result["would_change"] == ["database", "migrations", "env_file", "admin_credential"]
    assert not pg_database_exists(name)
    assert not (tmp_path / ".env.staging").exists()

    first = run_flow(staging_setup, StagingSetupParams(**params))
    assert first.result["ok"]
    assert first.result["changed"] == [
        "database",
        "migrations",
        "env_file",
        "admin_credential",
    ]
    rows = first.table(ARTIFACT_KEY)
    assert [row["step"] for row in rows][:3] == ["database", "migrations", "redis"]
    assert "**ok**" in first.description(ARTIFACT_KEY)
    key = Secret.load(block).get()  # type: ignore[union-attr]
    assert key not in str(first.result)
    assert key not in str(rows)
    with Database(Settings(_env_file=None), url=unborn_pg_url) as db:
        found = auth.CredentialStore(db, refresh_s=60).authenticate(key)
        assert found is not None
        assert found.role is auth.Role.ADMIN

    again = run_flow(staging_setup, StagingSetupParams(**params))
    assert again.result["ok"]
    assert again.result["changed"] == []
    assert Secret.load(block).get() == key  # type: ignore[union-attr]


def test_parameters_refuse_a_password_in_a_url() -> None:
    with pytest.raises(ValidationError, match="Secret block"):
        StagingSetupParams(
            database_url="postgresql://ops:hunter2@db/m1_staging", redis_url="redis://r"
        )
    with pytest.raises(ValidationError, match="Secret block"):
        StagingSetupParams(database_url="postgresql://db/m1", redis_url="redis://:pw@r:6379")


def test_a_password_from_the_block_fills_both_database_urls() -> None:
    plan = plan_staging(
        database_url="postgresql://ops@db/m1_s", redis_url="redis://r", env_file="e"
    )
    full = plan.with_password("pw")
    assert full.database_url == "postgresql+psycopg://ops:pw@db/m1_s"
    assert full.admin_url == "postgresql+psycopg://ops:pw@db/postgres"
    assert plan.with_password(None) == plan


def test_report_lists_steps_and_the_api_and_names_a_failure() -> None:
    plan = plan_staging(database_url="postgresql://db/m1_s", redis_url="redis://r", env_file="e")
    steps = [
        StepResult("database", Outcome.CREATED, "m1_s created", 0.1),
        StepResult("migrations", Outcome.UNCHANGED, "at 0003", 0.2),
    ]
    api = StepResult("api", Outcome.FAILED, "http://api: live 200, ready 503")
    report = staging_report(plan, StagingResult(steps, dry_run=False, seconds=1.25), api)
    assert report.artifact_key == ARTIFACT_KEY
    assert [row["step"] for row in report.table] == ["database", "migrations", "api"]
    assert report.log == "staging setup FAILED at api in 1.2 s; changed database"
    assert report.result["ok"] is False
    assert report.result["failed"] == ["api"]
    assert report.result["outcomes"] == {
        "database": "created",
        "migrations": "unchanged",
        "api": "failed",
    }
    dry = staging_report(
        plan,
        StagingResult(
            [StepResult("database", Outcome.WOULD_CREATE, "missing")], dry_run=True, seconds=0.5
        ),
        None,
    )
    assert dry.log == "staging setup ok in 0.5 s; dry run: would change database"
    assert "`postgresql+psycopg://db/m1_s`" in dry.description
