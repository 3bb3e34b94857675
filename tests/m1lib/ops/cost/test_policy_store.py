from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from m1lib.db.models import CacheTtlChange, CacheTtlPolicy, ControlCommand
from m1lib.db.session import Database
from m1lib.errors import InputError
from m1lib.ops.cost.policy import RELOAD_COMMAND, Figures, Proposal, ToolTtl, recommend_changes
from m1lib.ops.cost.policy_store import (
    apply_changes,
    list_changes,
    load_policy,
    reset_tool,
    set_tool,
)
from m1lib.ops.cost.ttl_guard import guard_check
from m1lib.settings import Settings

GOOD = Figures(hit_rate=0.8, error_rate=0.01, stale_rate=0.02, spend_usd=10.0)


def counts(db: Database) -> tuple[int, int, int]:
    with db.transaction() as session:
        return tuple(  # type: ignore[return-value]
            session.scalar(select(func.count()).select_from(table)) or 0
            for table in (CacheTtlPolicy, CacheTtlChange, ControlCommand)
        )


def reload_commands(db: Database) -> int:
    query = select(func.count()).where(ControlCommand.name == RELOAD_COMMAND)
    with db.transaction() as session:
        return session.scalar(query) or 0


def seeded(db: Database, settings: Settings) -> ToolTtl:
    return set_tool(
        db, settings, ToolTtl("weather", ttl_s=60.0, staleness_budget_s=600.0), actor="alice"
    )


def test_dry_run_changes_nothing(db: Database, settings: Settings) -> None:
    seeded(db, settings)
    before = counts(db)
    changes = recommend_changes(load_policy(db), [Proposal("weather", ttl_s=300.0, figures=GOOD)])
    result = apply_changes(db, settings, changes, actor="optimize-cost", dry_run=True)
    assert result.dry_run
    assert result.command_id is None
    assert len(result.changes) == 1
    assert counts(db) == before  # no policy row, no log row, no command
    assert load_policy(db)["weather"].ttl_s == 60.0


def test_apply_writes_the_rule_the_log_and_one_reload_command(
    db: Database, settings: Settings
) -> None:
    seeded(db, settings)
    changes = recommend_changes(
        load_policy(db),
        [
            Proposal("weather", ttl_s=9999.0, figures=GOOD, reason="rarely changes"),
            Proposal("search", ttl_s=30.0, staleness_budget_s=120.0),
        ],
    )
    commands = reload_commands(db)
    result = apply_changes(db, settings, changes, actor="optimize-cost", dry_run=False)
    assert reload_commands(db) == commands + 1
    assert result.command_id is not None
    policy = load_policy(db)
    assert (policy["weather"].ttl_s, policy["weather"].version) == (600.0, 2)  # clamped to budget
    assert (policy["search"].ttl_s, policy["search"].updated_by) == (30.0, "optimize-cost")
    logged = {c.tool: c for c in list_changes(db, limit=2)}
    assert logged["weather"].before is not None
    assert logged["weather"].before.ttl_s == 60.0
    assert logged["weather"].after is not None
    assert logged["weather"].after.ttl_s == 600.0
    assert logged["weather"].figures_before == GOOD
    assert logged["search"].before is None


def test_apply_refuses_a_change_beyond_its_budget(db: Database, settings: Settings) -> None:
    (change,) = recommend_changes({}, [Proposal("t", ttl_s=10.0, staleness_budget_s=20.0)])
    bad = type(change)(tool="t", before=None, after=ToolTtl("t", 30.0, 20.0))
    with pytest.raises(InputError) as caught:
        apply_changes(db, settings, [bad], actor="x", dry_run=False)
    assert caught.value.path == "ttl_s"
    assert counts(db)[0] == 0


def test_guard_reverts_a_harmful_change(db: Database, settings: Settings) -> None:
    seeded(db, settings)
    changes = recommend_changes(load_policy(db), [Proposal("weather", ttl_s=500.0, figures=GOOD)])
    apply_changes(db, settings, changes, actor="optimize-cost", dry_run=False)
    commands = reload_commands(db)
    worse = Figures(hit_rate=0.8, error_rate=0.01, stale_rate=0.30, spend_usd=4.0)
    # not settled yet: nothing judged
    assert guard_check(db, settings, {"weather": worse}, settle_s=3600) == []
    later = datetime.now(UTC) + timedelta(hours=2)
    (outcome,) = guard_check(db, settings, {"weather": worse}, settle_s=3600, now=later)
    assert outcome.verdict.revert
    assert outcome.reverted
    assert "stale rate rose" in outcome.verdict.reason
    assert load_policy(db)["weather"].ttl_s == 60.0  # back to before
    assert reload_commands(db) == commands + 1
    (logged, *_) = list_changes(db, tool="weather")
    assert logged.reverted_at == later
    assert logged.figures_after == worse
    assert "reverted: stale rate rose" in logged.reason
    # judged once: a second run finds nothing to do
    assert guard_check(db, settings, {"weather": worse}, settle_s=0, now=later) == []


def test_guard_keeps_a_good_change_and_removes_a_harmful_new_rule(
    db: Database, settings: Settings
) -> None:
    seeded(db, settings)
    proposals = [
        Proposal("weather", ttl_s=120.0, figures=GOOD),
        Proposal("search", ttl_s=30.0, staleness_budget_s=60.0, figures=GOOD),
    ]
    changes = recommend_changes(load_policy(db), proposals)
    apply_changes(db, settings, changes, actor="optimize-cost", dry_run=False)
    after = {"weather": Figures(hit_rate=0.9, error_rate=0.01, stale_rate=0.02),
             "search": Figures(hit_rate=0.5, error_rate=0.01, stale_rate=0.02)}  # fmt: skip
    outcomes = {o.change.tool: o for o in guard_check(db, settings, after, settle_s=0)}
    assert not outcomes["weather"].reverted
    assert outcomes["search"].reverted
    policy = load_policy(db)
    assert policy["weather"].ttl_s == 120.0
    assert "search" not in policy


def test_guard_dry_run_writes_nothing(db: Database, settings: Settings) -> None:
    seeded(db, settings)
    changes = recommend_changes(load_policy(db), [Proposal("weather", ttl_s=500.0, figures=GOOD)])
    apply_changes(db, settings, changes, actor="optimize-cost", dry_run=False)
    before = counts(db)
    (outcome,) = guard_check(
        db, settings, {"weather": Figures(hit_rate=0.1)}, settle_s=0, dry_run=True
    )
    assert outcome.verdict.revert
    assert not outcome.reverted
    assert counts(db) == before
    assert load_policy(db)["weather"].ttl_s == 500.0


def test_reset_removes_the_rule_and_logs_it(db: Database, settings: Settings) -> None:
    seeded(db, settings)
    assert reset_tool(db, settings, "weather", actor="alice")
    assert not reset_tool(db, settings, "weather", actor="alice")
    assert load_policy(db) == {}
    (logged, *_) = list_changes(db, tool="weather")
    assert logged.after is None
    assert logged.reason == "reset"
