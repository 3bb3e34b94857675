"""production-validation: the pure report, and a run under Prefect reading the Secret block
(the deployment against a live `m1 up` is in tests/e2e)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from flows.production_validation import ARTIFACT_KEY, validation_report
from m1lib.ops.validation.scenario import Status
from tests.services import free_port
from tests.validation_reports import make_report


def test_the_report_is_a_table_of_every_scenario_with_the_summary_as_description() -> None:
    flow_report = validation_report(make_report(Status.PASS, Status.FAIL))
    assert flow_report.artifact_key == ARTIFACT_KEY
    assert [row["status"] for row in flow_report.table] == ["pass", "fail"]
    assert set(flow_report.table[0]) >= {"id", "status", "observed", "threshold", "message"}
    assert "**fail**" in flow_report.description
    assert flow_report.result["exitStatus"] == 1
    assert flow_report.log == "production validation fail: 1 pass, 0 warn, 1 fail"


def test_strict_makes_a_warn_close_the_gate() -> None:
    assert validation_report(make_report(Status.WARN)).result["exitStatus"] == 0
    assert validation_report(make_report(Status.WARN), strict=True).result["exitStatus"] == 1


def test_the_flow_reads_its_admin_key_from_the_secret_block_and_publishes_both_artifacts(
    run_flow: Callable[..., Any], task_settings: Path
) -> None:
    """An API nobody serves: scenarios that need the admin key fail instead of warning that
    none was given, so the key came from the block (it is never a parameter)."""
    from prefect.blocks.system import Secret

    from flows.production_validation import (
        SUMMARY_KEY,
        ProductionValidationParams,
        production_validation,
    )

    Secret(value={"admin_key": "m1_key_from_the_block"}).save("m1-validation", overwrite=True)
    try:
        params = ProductionValidationParams(api_url=f"http://127.0.0.1:{free_port()}")
        run = run_flow(production_validation, params)
    finally:
        Secret.delete("m1-validation")
    rows = {row["id"]: row for row in run.table(ARTIFACT_KEY)}
    assert len(rows) == 29
    assert rows["api.query"]["status"] == "fail"
    assert rows["api.query"]["observed"] != "no admin key"
    assert run.result["verdict"] == "fail"
    assert run.result["exitStatus"] == 1
    assert SUMMARY_KEY in run.artifacts
    assert "m1_key_from_the_block" not in str(run.result)
