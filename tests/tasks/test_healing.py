"""Self-heal tasks on the incident: escalation (the flow's own runs are in tests/flows)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from m1lib.db.migrate import upgrade
from m1lib.db.session import Database
from m1lib.ops import incidents
from m1lib.settings import get_settings
from tasks.healing import escalate, find_incident


def _opened(db: Database, component: str) -> int:
    with db.transaction() as session:
        row = incidents.open_or_current(
            session, component, kind="consecutive_failures", trigger="test",
            started_at=datetime.now(UTC), last_check={},
        )  # fmt: skip
        session.flush()
        return int(row.id)


def test_escalate_leaves_an_incident_resolved_meanwhile_resolved(task_settings: Path) -> None:
    """The self-heal run saw api failing; before it escalated, a passing check resolved the
    incident: it stays resolved, no second status, nobody told."""
    with Database(get_settings()) as db:
        upgrade(db)
        open_id = _opened(db, "prefect")
        resolved_id = _opened(db, "api")
        with db.transaction() as session:
            incidents.resolve(session, "api", datetime.now(UTC))
    assert escalate.fn(resolved_id, "api still failing") is False
    assert escalate.fn(open_id, "prefect still failing") is True
    with Database(get_settings()) as db:
        found = {i.id: i for i in incidents.list_incidents(db).items}
    assert (found[resolved_id].status, found[resolved_id].escalated_at) == ("resolved", None)
    assert [a["action"] for a in found[resolved_id].actions] == ["resolve"]
    assert found[open_id].status == "escalated"


def test_tasks_called_twice_in_one_run_look_again_with_results_persisted(
    task_settings: Path, prefect_harness: None
) -> None:
    """With PREFECT_RESULTS_PERSIST_BY_DEFAULT on, Prefect answers a task called again with the
    same arguments in one run from its cache: the self-heal run, looking for its incident again
    once the database is back, would keep the first answer (none)."""
    from prefect import flow
    from prefect.settings import PREFECT_RESULTS_PERSIST_BY_DEFAULT, temporary_settings

    with Database(get_settings()) as db:
        upgrade(db)

    @flow
    def twice() -> tuple[int | None, int, int | None]:
        before = find_incident("redis")
        with Database(get_settings()) as db:
            opened = _opened(db, "redis")
        return before, opened, find_incident("redis")

    with temporary_settings({PREFECT_RESULTS_PERSIST_BY_DEFAULT: True}):
        before, opened, after = twice()
    assert (before, after) == (None, opened)
