"""Cache TTL policy tasks for the optimize-cost flow: read, recommend, apply, guard.

``recommend_changes`` is pure (the recommend mode: a plain task, nothing a retry could change);
the others touch the database and retry only on an outage (``tasks.retry``). ``apply_changes``
and ``guard_check`` take ``dry_run``: then they write nothing and issue no command.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from prefect import task

from m1lib.metrics import run_query
from m1lib.ops.cost import policy, policy_store, ttl_guard, ttl_plan
from m1lib.ops.cost.figures import fetch_figures, with_stale_rates
from m1lib.ops.cost.observe import Observation, load_observations
from m1lib.ops.cost.policy import Figures, PolicyChange, Proposal, ToolTtl
from m1lib.ops.cost.policy_store import AppliedChanges
from m1lib.ops.cost.staleness import load_stale_rates
from m1lib.ops.cost.ttl_guard import GuardOutcome, Tolerance
from m1lib.ops.cost.ttl_plan import TtlPlan
from tasks.resources import database
from tasks.retry import io_task

__all__ = [
    "apply_changes",
    "guard_check",
    "load_ttl_policy",
    "plan_ttl_changes",
    "read_ttl_figures",
    "read_ttl_observations",
    "recommend_changes",
]


@io_task("load-cache-ttl-policy")
def load_ttl_policy() -> dict[str, ToolTtl]:
    """Every tool's TTL rule as the database holds it now."""
    with database() as db:
        return policy_store.load_policy(db)


@task(name="recommend-cache-ttl-changes")
def recommend_changes(
    current: Mapping[str, ToolTtl],
    proposals: Sequence[Proposal],
    default_budget_s: float | None = None,
) -> list[PolicyChange]:
    """The changes the proposals make, each clamped to its tool's staleness budget; no I/O."""
    return policy.recommend_changes(current, proposals, default_budget_s=default_budget_s)


@io_task("apply-cache-ttl-changes")
def apply_changes(changes: Sequence[PolicyChange], actor: str, dry_run: bool) -> AppliedChanges:
    """Store the changes, log them with their before figures and tell every replica; a dry run
    returns them untouched."""
    with database() as db:
        return policy_store.apply_changes(db, db.settings, changes, actor=actor, dry_run=dry_run)


@io_task("guard-cache-ttl-changes")
def guard_check(
    figures: Mapping[str, Figures],
    settle_s: float,
    tolerance: Tolerance | None = None,
    dry_run: bool = False,
) -> list[GuardOutcome]:
    """Judge the changes in force for ``settle_s`` against each tool's figures now; revert those
    that made hit rate, error rate or staleness worse (a dry run only judges)."""
    with database() as db:
        return ttl_guard.guard_check(
            db, db.settings, figures, settle_s=settle_s, tolerance=tolerance, dry_run=dry_run
        )


@io_task("read-cache-ttl-figures")
def read_ttl_figures(start: datetime, end: datetime) -> dict[str, Figures]:
    """Each tool's hit rate, error rate and spend over [start, end) from the query engine (a
    flow run's runtime asks the API, so these are the replicas' events), and its stale rate
    (suspect hits / hits, an upper bound) from the counters the processes published. The same
    figures are the before figures of the changes this run applies and the after figures of
    the changes it judges."""
    figures = fetch_figures(run_query, start, end)
    with database() as db:
        return with_stale_rates(figures, load_stale_rates(db, start, end))


@io_task("read-cache-ttl-observations")
def read_ttl_observations(since: datetime) -> list[Observation]:
    """The recommendations the processes published since ``since``."""
    with database() as db:
        return load_observations(db, since=since)


@task(name="plan-cache-ttl-changes")
def plan_ttl_changes(
    observations: Sequence[Observation],
    current: Mapping[str, ToolTtl],
    figures: Mapping[str, Figures],
    peak_hours: Sequence[int],
    over_budget: bool,
    default_budget_s: float,
    peak_ratio: float,
) -> TtlPlan:
    """Combined per-tool proposals (peak/off-peak where the traffic calls for it, stale mode over
    budget); no I/O."""
    return ttl_plan.plan(
        observations,
        current,
        figures,
        peak_hours=peak_hours,
        over_budget=over_budget,
        default_budget_s=default_budget_s,
        peak_ratio=peak_ratio,
    )
