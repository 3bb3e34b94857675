"""database-setup: the flow body under Prefect (dry run and not), its artifact, and its report."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import ValidationError

from flows.database_setup import ARTIFACT_KEY, DatabaseSetupParams, database_setup, setup_report
from m1lib.db import migrate
from tests.flow_runs import FlowRun


def test_dry_run_reports_the_revision_and_changes_nothing(
    task_settings: Path, run_flow: Callable[..., FlowRun]
) -> None:
    run = run_flow(database_setup, DatabaseSetupParams(dry_run=True))
    head = migrate.head_revision()
    assert run.result["dry_run"] is True
    assert (run.result["revision_before"], run.result["revision"]) == (None, None)
    assert (run.result["head"], run.result["tables"]) == (head, [])
    assert run.table(ARTIFACT_KEY) == []
    assert run.description(ARTIFACT_KEY).startswith(
        f"Schema revision **none** (code expects {head})"
    )
    assert "m1.db" in run.result["database"]


def test_run_migrates_then_a_second_run_changes_nothing(
    task_settings: Path, run_flow: Callable[..., FlowRun]
) -> None:
    head = migrate.head_revision()
    first = run_flow(database_setup)
    assert (first.result["revision_before"], first.result["revision"]) == (None, head)
    tables = {row["table"]: row["rows"] for row in first.result["tables"]}
    assert tables["replicas"] == 0
    assert {"control_commands", "control_acks", "api_credentials"} <= set(tables)
    artifact = first.table(ARTIFACT_KEY)
    assert {row["table"] for row in artifact} == set(tables)
    assert {row["revision"] for row in artifact} == {head}
    assert f"; {len(tables)} tables." in first.description(ARTIFACT_KEY)
    again = run_flow(database_setup, DatabaseSetupParams(dry_run=False))
    assert (again.result["revision_before"], again.result["revision"]) == (head, head)
    assert again.result["tables"] == first.result["tables"]


def test_report_says_what_a_dry_run_would_do_and_what_a_run_did() -> None:
    revision = {"current": "aaaa", "head": "bbbb"}
    tables = [{"table": "replicas", "rows": 2}]
    dry = setup_report(
        DatabaseSetupParams(dry_run=True), "sqlite:///m1.db", revision, "aaaa", tables
    )
    assert dry.log == "dry run: database at aaaa, target head"
    assert dry.table == [{"revision": "aaaa", "table": "replicas", "rows": 2}]
    assert dry.artifact_key == ARTIFACT_KEY
    done = setup_report(DatabaseSetupParams(), "sqlite:///m1.db", revision, "bbbb", tables)
    assert done.log == "database migrated from aaaa to bbbb"
    assert done.description == (
        "Schema revision **bbbb** (code expects bbbb) on `sqlite:///m1.db`; 1 tables."
    )
    assert done.result == {
        "database": "sqlite:///m1.db",
        "revision_before": "aaaa",
        "revision": "bbbb",
        "head": "bbbb",
        "dry_run": False,
        "tables": tables,
    }


def test_report_of_a_new_database_names_nothing() -> None:
    report = setup_report(
        DatabaseSetupParams(dry_run=True), "db", {"current": None, "head": "bbbb"}, None, []
    )
    assert report.log == "dry run: database at nothing, target head"
    assert report.table == []
    assert report.description.startswith("Schema revision **none**")


def test_the_target_revision_is_head_or_a_revision_id() -> None:
    assert DatabaseSetupParams().target_revision == "head"
    assert DatabaseSetupParams(target_revision="0a1b2c3d").target_revision == "0a1b2c3d"
    with pytest.raises(ValidationError, match="target_revision"):
        DatabaseSetupParams(target_revision="head; DROP TABLE x")
    assert database_setup.name == "database-setup"
