"""One shape for every flow that changes state: preview, apply unless ``dry_run``, pure report.

    @flow(name="purge-tokens", log_prints=True)
    def purge_tokens(params: PurgeTokensParams | None = None) -> dict[str, Any]:
        params = params or PurgeTokensParams()
        preview = preview_purge(cutoff)                    # 1. preview: reads, never writes
        summary = apply_unless_dry_run(                    # 2. the flow's one branch on dry_run
            params.dry_run,
            apply=lambda: purge_expired(cutoff, ACTOR),
            rehearse=lambda: preview,
        )
        return publish(purge_report(summary))             # 3. pure report, then publish it

The report function is pure (no I/O, no Prefect, no clock): from what the steps returned it
builds a :class:`FlowReport` (the log line, the table artifact, the run's return value) and is
tested directly. :func:`publish` is the one place a flow writes its artifact.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from prefect.artifacts import create_markdown_artifact, create_table_artifact

T = TypeVar("T")


@dataclass(frozen=True)
class FlowReport:
    """What a state-changing flow run shows and answers."""

    artifact_key: str
    table: list[dict[str, Any]]
    description: str  # the artifact's markdown
    log: str  # one line for the run's log
    result: dict[str, Any]  # the flow's return value
    markdown: str | None = None  # a full report, as its own markdown artifact `<key>-report`


def apply_unless_dry_run(dry_run: bool, *, apply: Callable[[], T], rehearse: Callable[[], T]) -> T:
    """``apply()`` the change, or on a dry run ``rehearse()`` it: answer what it would do.

    ``rehearse`` is the preview itself when the preview already says what would change (a
    count, a schema revision), or the apply steps in their own dry-run mode when only walking
    the data can say it (compaction): previewing those before applying would do the work twice.
    """
    return rehearse() if dry_run else apply()


def publish(report: FlowReport) -> dict[str, Any]:
    """Log the report's line, create its table artifact (and markdown one, when the report has
    it), and return the run's result."""
    print(report.log)
    create_table_artifact(
        key=report.artifact_key, table=report.table, description=report.description
    )
    if report.markdown is not None:
        create_markdown_artifact(
            key=f"{report.artifact_key}-report",
            markdown=report.markdown,
            description=report.description,
        )
    return report.result
