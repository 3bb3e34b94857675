"""The shape every state-changing flow follows: one branch on dry_run, one place to publish."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from prefect import flow

from flows.shape import FlowReport, apply_unless_dry_run, publish
from tests.flow_runs import FlowRun


def test_a_dry_run_rehearses_and_never_applies() -> None:
    calls: list[str] = []

    def step(name: str) -> Callable[[], str]:
        return lambda: calls.append(name) or name  # type: ignore[func-returns-value]

    assert apply_unless_dry_run(True, apply=step("apply"), rehearse=step("rehearse")) == "rehearse"
    assert calls == ["rehearse"]
    assert apply_unless_dry_run(False, apply=step("apply"), rehearse=step("rehearse")) == "apply"
    assert calls == ["rehearse", "apply"]


def test_an_apply_that_fails_fails_the_flow_step() -> None:
    def broken() -> int:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        apply_unless_dry_run(False, apply=broken, rehearse=lambda: 0)


REPORT = FlowReport(
    artifact_key="shape-test",
    table=[{"kind": "token", "records": 2}],
    description="**2** records",
    log="2 records",
    result={"records": 2},
)


@flow(name="shape-test", log_prints=True)
def publishing_flow() -> dict[str, Any]:
    return publish(REPORT)


def test_publish_creates_the_table_artifact_and_returns_the_result(
    run_flow: Callable[..., FlowRun], caplog: pytest.LogCaptureFixture
) -> None:
    run = run_flow(publishing_flow)
    assert run.result == {"records": 2}
    assert run.table("shape-test") == REPORT.table
    assert run.description("shape-test") == "**2** records"
    assert "2 records" in [r.getMessage() for r in caplog.records if r.name == "prefect.flow_runs"]


@flow(name="shape-markdown-test", log_prints=True)
def publishing_markdown_flow() -> dict[str, Any]:
    return publish(
        FlowReport(
            artifact_key="shape-md-test",
            table=[{"n": 1}],
            description="one",
            log="one",
            result={"n": 1},
            markdown="# One\n",
        )
    )


def test_a_report_with_markdown_publishes_it_as_the_key_report_artifact(
    run_flow: Callable[..., FlowRun],
) -> None:
    run = run_flow(publishing_markdown_flow)
    assert run.table("shape-md-test") == [{"n": 1}]
    assert run.artifacts["shape-md-test-report"].data == "# One\n"
    assert run.description("shape-md-test-report") == "one"
