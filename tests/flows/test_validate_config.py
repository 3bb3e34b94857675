"""validate-config: the flow under Prefect (dry run, strict failure), its artifacts, its report."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

from flows.validate_config import (
    ARTIFACT_KEY,
    MARKDOWN_KEY,
    ConfigRejectedError,
    ValidateConfigParams,
    validate_config,
    validation_report,
)
from m1lib.settings import get_settings
from tests.flow_runs import FlowRun

SECRET = "S3cr3t-" + "x" * 12  # too short (a finding about it) and recognisable


@pytest.fixture
def production_env(task_settings: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(task_settings)  # no developer's .env
    monkeypatch.setenv("M1_ENV", "production")
    monkeypatch.setenv("M1_JWT_SECRET", SECRET)
    monkeypatch.setenv("M1_REVOCATION_FAIL_OPEN", "true")
    get_settings.cache_clear()
    return task_settings


def test_a_dry_run_reports_every_finding_and_completes(
    production_env: Path, run_flow: Callable[..., FlowRun]
) -> None:
    run = run_flow(validate_config, ValidateConfigParams(dry_run=True, offline=True))
    assert run.result["verdict"]["mode"] == "dry-run"
    assert run.result["verdict"]["passed"] is True
    rules = {row["rule"] for row in run.table(ARTIFACT_KEY)}
    assert {"database.sqlite", "revocation.fail_open", "jwt.keys_unusable"} <= rules
    assert "DRY RUN (would fail strict" in run.description(ARTIFACT_KEY)
    markdown = run.artifacts[MARKDOWN_KEY].data
    assert "| critical | database.sqlite |" in markdown
    everything = json.dumps(run.result) + markdown + json.dumps(run.table(ARTIFACT_KEY))
    assert SECRET not in everything


def test_a_strict_run_fails_after_publishing_its_report(
    production_env: Path, prefect_harness: None
) -> None:
    state = validate_config(ValidateConfigParams(offline=True), return_state=True)
    assert state.is_failed()
    with pytest.raises(ConfigRejectedError, match="FAIL"):
        state.result()
    runs = ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=runs))
    assert {artifact.key for artifact in found if artifact.key} == {ARTIFACT_KEY, MARKDOWN_KEY}


def test_report_of_a_clean_configuration() -> None:
    outcome = {
        "profile": "local",
        "live": False,
        "verdict": {
            "passed": True,
            "exitCode": 0,
            "mode": "strict",
            "failing": 0,
            "summary": "PASS (strict: no critical or high finding): 0 critical",
        },
        "counts": {"critical": 0, "high": 0, "medium": 0, "low": 0},
        "table": [],
        "markdown": "",
        "text": "",
    }
    report = validation_report(outcome, ValidateConfigParams(offline=True))  # type: ignore[arg-type]
    assert report.artifact_key == ARTIFACT_KEY
    assert report.table == []
    assert (
        report.log
        == "validate-config (local): PASS (strict: no critical or high finding): 0 critical"
    )
    assert "static only (offline)" in report.description
    assert report.result["findings"] == []


def test_the_flow_is_named_for_its_deployment() -> None:
    assert validate_config.name == "validate-config"
