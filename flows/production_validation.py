"""Production validation: is this deployment of M1 ready for production? 29 scenarios say.

Configuration (the validator's rules, 8), database (5), Redis (5), API (4), security (4) and a
performance baseline against the SLO file (3), each pass, warn or fail with what it observed and
the threshold. Report only: writes are probes that clean up after themselves (a rolled-back
temporary table, expiring Redis keys, probe tokens revoked, one marked probe alert).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from pydantic import Field

from flows.shape import FlowReport, publish
from m1lib.ops.validation.suite import GROUPS, SuiteReport, open_context, report_of
from m1lib.ops.validation.target import Target
from m1lib.settings import get_settings
from tasks.validation import run_group, validation_credentials

__all__ = ["ARTIFACT_KEY", "SUMMARY_KEY", "ProductionValidationParams", "production_validation"]

ARTIFACT_KEY: Final = "production-validation"
SUMMARY_KEY: Final = "production-validation-summary"


class ProductionValidationParams(Target):
    """The target (URLs and profile; no secret) and how strict the gate is."""

    strict: bool = Field(False, description="A warn fails the gate too (exitStatus 1).")


@flow(name="production-validation", log_prints=True)
def production_validation(params: ProductionValidationParams | None = None) -> dict[str, Any]:
    """Run every production-validation scenario against the target and report the verdict.

    Run it by hand before a release or after a change of infrastructure (no schedule). URLs are
    parameters; the admin key and passwords come from the Secret block M1_VALIDATION_SECRET_BLOCK
    or the environment. The result's exitStatus is the gate: 0 no fail, 1 a fail.
    """
    params = params or ProductionValidationParams()
    settings = get_settings()
    credentials = validation_credentials(settings)
    started = datetime.now(UTC)
    with open_context(params, credentials, settings) as context:
        results = [result for group in GROUPS for result in run_group(context, group)]
    report = report_of(context, started, results)
    counts = report.counts()
    create_markdown_artifact(
        key=SUMMARY_KEY,
        markdown=report.markdown(),
        description=f"Production validation: {report.verdict.value} ({counts['pass']} pass, "
        f"{counts['warn']} warn, {counts['fail']} fail)",
    )
    return publish(validation_report(report, strict=params.strict))


def validation_report(report: SuiteReport, *, strict: bool = False) -> FlowReport:
    """The table of every scenario; the markdown summary as its description; the JSON result."""
    counts = report.counts()
    result = report.to_json()
    result["exitStatus"] = report.exit_status(strict=strict)
    result["strict"] = strict
    return FlowReport(
        artifact_key=ARTIFACT_KEY,
        table=report.rows(),
        description=report.markdown(),
        log=(
            f"production validation {report.verdict.value}: {counts['pass']} pass, "
            f"{counts['warn']} warn, {counts['fail']} fail"
        ),
        result=result,
    )
