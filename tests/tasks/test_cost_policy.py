from __future__ import annotations

from pathlib import Path

from m1lib.ops.cost.policy import Figures, Proposal
from m1lib.ops.cost.policy_store import list_changes
from tasks.cost_policy import apply_changes, guard_check, load_ttl_policy, recommend_changes
from tasks.database import apply_migrations
from tasks.resources import database

GOOD = Figures(hit_rate=0.9, error_rate=0.0, stale_rate=0.0)


def test_recommend_apply_then_guard_revert_through_the_tasks(task_settings: Path) -> None:
    apply_migrations.fn("head")
    proposal = Proposal("weather", ttl_s=120.0, staleness_budget_s=60.0, figures=GOOD)
    changes = recommend_changes.fn(load_ttl_policy.fn(), [proposal])
    assert changes[0].after.ttl_s == 60.0  # within the budget
    assert not apply_changes.fn(changes, "optimize-cost", dry_run=True).change_ids
    assert load_ttl_policy.fn() == {}
    applied = apply_changes.fn(changes, "optimize-cost", dry_run=False)
    assert load_ttl_policy.fn()["weather"].ttl_s == 60.0
    (outcome,) = guard_check.fn({"weather": Figures(hit_rate=0.2)}, settle_s=0)
    assert outcome.reverted
    assert load_ttl_policy.fn() == {}
    with database() as db:
        (logged,) = list_changes(db, tool="weather")
    assert logged.id == applied.change_ids[0]
    assert logged.reverted_at is not None
