"""The purge-tokens flow: its tasks (by ``.fn()``), its body under Prefect with its artifact,
its parameters and its pure report.

Tasks read settings from the environment, as a flow-run subprocess does, so the tests point
``M1_DATABASE_URL`` at a PostgreSQL database of this module's own.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from flows.purge_tokens import ACTOR, ARTIFACT_KEY, PurgeTokensParams, purge_report, purge_tokens
from m1lib.errors import InputError
from m1lib.revocation import PurgeSummary, RevocationManager
from m1lib.settings import Settings, get_settings
from tasks.retry import is_transient
from tasks.tokens import preview_purge, purge_cutoff, purge_expired
from tests.flow_runs import FlowRun
from tests.m1lib.revocation.revocation_proc import create_database
from tests.services import PG_SERVER, drop_database

NOW = datetime(2026, 11, 25, 3, 17, tzinfo=UTC)


@pytest.fixture(scope="module")
def database_url(pg_url: str) -> Iterator[str]:
    name = create_database()
    yield f"{PG_SERVER}/{name}"
    drop_database(name)


@pytest.fixture
def manager(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[RevocationManager]:
    """Tasks see this database through the environment; the test writes through this manager."""
    monkeypatch.setenv("M1_DATABASE_URL", database_url)
    get_settings.cache_clear()
    settings = Settings(_env_file=None, database={"url": database_url})
    manager = RevocationManager.from_settings(settings)
    now = datetime.now(UTC)
    for age_days, tool in ((3, "web_search"), (3, "web_search"), (2, "send_email"), (0, "run_sql")):
        manager.revoke_token(
            str(uuid.uuid4()),
            "r",
            "alice",
            tool_name=tool,
            expires_at=now - timedelta(days=age_days, minutes=1),
        )
    manager.revoke_all(
        tool_name="web_search",
        issued_before=now - timedelta(days=5),
        reason="r",
        revoked_by="alice",
    )
    yield manager
    manager.purge(now)  # leave nothing behind for the next test
    manager.close()
    get_settings.cache_clear()


def test_cutoff_is_hours_before_now() -> None:
    assert purge_cutoff.fn(36, now=NOW) == NOW - timedelta(hours=36)


def test_preview_counts_per_tool_and_deletes_nothing(manager: RevocationManager) -> None:
    cutoff = datetime.now(UTC) - timedelta(days=1)
    preview = preview_purge.fn(cutoff)
    assert (preview.dry_run, preview.tokens, preview.rules) == (True, 3, 1)
    assert preview.tokens_by_tool == {"web_search": 2, "send_email": 1}
    assert len(manager.get_revocation_list().items) == 4


def test_purge_deletes_only_records_expired_before_the_cutoff_and_audits_it(
    manager: RevocationManager,
) -> None:
    cutoff = datetime.now(UTC) - timedelta(days=1)
    summary = purge_expired.fn(cutoff, ACTOR)
    assert (summary.dry_run, summary.tokens, summary.rules) == (False, 3, 1)
    remaining = manager.get_revocation_list().items
    assert [record.tool_name for record in remaining] == ["run_sql"]
    audit = manager.get_audit_log(limit=1).items[0]
    assert (audit.action, audit.actor, audit.detail["tokens"]) == ("purge", ACTOR, 3)
    assert purge_expired.fn(cutoff, ACTOR).tokens == 0  # a retry finds nothing left


def test_purge_refuses_a_future_cutoff(manager: RevocationManager) -> None:
    with pytest.raises(InputError, match="in the future"):
        purge_expired.fn(datetime.now(UTC) + timedelta(hours=1), ACTOR)


def test_io_tasks_retry_only_transient_failures() -> None:
    for io_task in (preview_purge, purge_expired):
        assert (io_task.retries, io_task.retry_condition_fn) == (3, is_transient)
    assert purge_cutoff.retries == 0  # pure work: nothing a retry could change


def test_dry_run_counts_and_deletes_nothing(
    manager: RevocationManager, run_flow: Callable[..., FlowRun]
) -> None:
    run = run_flow(purge_tokens, PurgeTokensParams(older_than_hours=24, dry_run=True))
    assert (run.result["dry_run"], run.result["tokens"], run.result["rules"]) == (True, 3, 1)
    assert len(manager.get_revocation_list().items) == 4
    assert run.table(ARTIFACT_KEY) == run.result["rows"]
    assert {"kind": "token", "tool": "web_search", "records": 2} in run.table(ARTIFACT_KEY)
    assert run.description(ARTIFACT_KEY).endswith("(dry run: nothing deleted).")


def test_run_purges_and_its_artifact_lists_what_went(
    manager: RevocationManager, run_flow: Callable[..., FlowRun]
) -> None:
    run = run_flow(purge_tokens, PurgeTokensParams(older_than_hours=24))
    assert (run.result["dry_run"], run.result["tokens"], run.result["rules"]) == (False, 3, 1)
    assert [record.tool_name for record in manager.get_revocation_list().items] == ["run_sql"]
    assert manager.get_audit_log(limit=1).items[0].actor == ACTOR
    assert run.table(ARTIFACT_KEY) == run.result["rows"]
    assert run.description(ARTIFACT_KEY).startswith("Purged **3** token records and **1** rules")
    again = run_flow(purge_tokens)
    assert again.table(ARTIFACT_KEY) == [{"kind": "none", "tool": "-", "records": 0}]


def test_report_lists_what_was_purged_per_kind_and_tool() -> None:
    summary = PurgeSummary(
        older_than=NOW,
        dry_run=False,
        tokens=3,
        rules=1,
        tokens_by_tool={"web_search": 2, "send_email": 1},
        rules_by_tool={"web_search": 1},
    )
    report = purge_report(summary)
    assert report.artifact_key == ARTIFACT_KEY
    assert report.table == [
        {"kind": "token", "tool": "send_email", "records": 1},
        {"kind": "token", "tool": "web_search", "records": 2},
        {"kind": "rule", "tool": "web_search", "records": 1},
    ]
    assert report.description.startswith("Purged **3** token records and **1** rules")
    assert (
        report.log
        == "Purged 3 token records and 1 rules that expired before 2026-11-25T03:17:00+00:00"
    )
    assert report.result == {
        "older_than": NOW.isoformat(),
        "dry_run": False,
        "tokens": 3,
        "rules": 1,
        "rows": report.table,
        "description": report.description,
    }


def test_dry_run_report_says_nothing_was_deleted() -> None:
    report = purge_report(PurgeSummary(older_than=NOW, dry_run=True, tokens=0, rules=0))
    assert report.table == [{"kind": "none", "tool": "-", "records": 0}]
    assert report.description.startswith("Would purge **0**")
    assert report.description.endswith("(dry run: nothing deleted).")
    assert report.result["dry_run"] is True


def test_parameters_are_bounded_and_described() -> None:
    assert PurgeTokensParams().older_than_hours == 24
    assert PurgeTokensParams().dry_run is False
    with pytest.raises(ValidationError):
        PurgeTokensParams(older_than_hours=-1)
    with pytest.raises(ValidationError):
        PurgeTokensParams(older_than_hours=24 * 366)
    fields = PurgeTokensParams.model_fields
    assert all(field.description for field in fields.values())
    assert purge_tokens.name == "purge-tokens"
