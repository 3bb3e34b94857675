"""The optimize-cost flow's TTL loop, called as a flow: recommend mode changes nothing, apply mode
writes rules, the change log and one reload command, the guard reverts a harmful change."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, update

from flows.optimize_cost import ARTIFACT_KEY, OptimizeCostParams, optimize_cost
from m1lib.db.migrate import upgrade
from m1lib.db.models import Base, CacheTtlChange, CacheTtlPolicy, ControlCommand
from m1lib.db.session import Database
from m1lib.metrics import MetricsRuntime, install_default
from m1lib.ops.cost.observe import Observation, publish
from m1lib.ops.cost.policy import Figures, PolicyChange, ToolTtl
from m1lib.ops.cost.policy_store import apply_changes, load_policy
from m1lib.ops.cost.staleness import Counters
from m1lib.settings import get_settings
from tests.flow_runs import FlowRun

LEARNED = "cost-benefit"


@pytest.fixture
def metrics(task_settings: Path) -> Iterator[MetricsRuntime]:
    """This process's default metrics runtime, which the flow's figures are read from."""
    get_settings.cache_clear()
    runtime = MetricsRuntime(get_settings(), replica_id="test")
    runtime.start()
    previous = install_default(runtime)
    yield runtime
    install_default(previous)
    runtime.close()


@pytest.fixture
def db(metrics: MetricsRuntime) -> Iterator[Database]:
    database = Database(get_settings())
    upgrade(database)
    yield database
    database.dispose()


def rows(db: Database, model: type[Base]) -> int:
    with db.transaction() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def observed(db: Database) -> None:
    """Two replicas published a cost-benefit TTL for weather: 600 s at 100 requests/h, 1,200 s
    at 300 requests/h; a third is still warming up (left out of the combination)."""
    now = datetime.now(UTC)
    publish(
        db,
        [
            Observation("replica-a", "weather", 600.0, LEARNED, 100.0, 0.5, 0.01, 0.02, 1.0, 2.0,
                        tracked_keys=10, updated_at=now),
            Observation("replica-b", "weather", 1200.0, LEARNED, 300.0, 0.5, 0.03, 0.06, 3.0, 6.0,
                        tracked_keys=10, updated_at=now),
            Observation("svc-1", "weather", 300.0, "baseline: warming up", 50.0, updated_at=now),
            Observation("old", "weather", 60.0, LEARNED, 9999.0,
                        updated_at=now - timedelta(hours=2)),  # too old: left out
        ],
    )  # fmt: skip


def test_recommend_mode_proposes_but_changes_nothing(
    db: Database, run_flow: Callable[..., FlowRun]
) -> None:
    observed(db)
    run = run_flow(optimize_cost, OptimizeCostParams(dry_run=True))
    ttl = run.result["ttl"]
    assert ttl["combined"]["weather"]["ttl_s"] == pytest.approx(1050.0)  # (600*100+1200*300)/400
    assert ttl["combined"]["weather"]["processes"] == 3
    [change] = ttl["changes"]
    assert (change["tool"], change["before"]) == ("weather", None)
    assert change["after"]["ttl_s"] == pytest.approx(1050.0)
    assert change["after"]["staleness_budget_s"] == 3600.0  # M1_COST_TTL_DEFAULT_BUDGET_S
    assert ttl["applied"] is None
    assert (rows(db, CacheTtlPolicy), rows(db, CacheTtlChange), rows(db, ControlCommand)) == (
        0, 0, 0
    )  # fmt: skip
    assert "1 TTL changes proposed (recommend mode)" in run.description(ARTIFACT_KEY)
    markdown = run.artifacts[f"{ARTIFACT_KEY}-report"].data
    assert "## Cache TTLs" in markdown
    assert "| weather | default TTL | 1050 s" in markdown
    assert any(row["breakdown"] == "ttl-proposed" for row in run.table(ARTIFACT_KEY))


def test_apply_mode_writes_the_rule_the_change_log_and_one_reload(
    db: Database, run_flow: Callable[..., FlowRun]
) -> None:
    observed(db)
    run = run_flow(optimize_cost, OptimizeCostParams())
    assert load_policy(db)["weather"].ttl_s == pytest.approx(1050.0)
    assert (rows(db, CacheTtlChange), rows(db, ControlCommand)) == (1, 1)
    applied = run.result["ttl"]["applied"]
    assert len(applied["change_ids"]) == 1
    assert applied["command_id"] is not None
    again = run_flow(optimize_cost, OptimizeCostParams())  # the same recommendation: no change
    assert again.result["ttl"]["changes"] == []
    assert (rows(db, CacheTtlChange), rows(db, ControlCommand)) == (1, 1)


def test_the_guard_reverts_a_change_that_made_the_hit_rate_worse(
    db: Database, metrics: MetricsRuntime, run_flow: Callable[..., FlowRun]
) -> None:
    settings = get_settings()
    change = PolicyChange(
        "weather",
        None,
        ToolTtl("weather", 30.0, 3600.0),
        reason="seeded",
        figures_before=Figures(hit_rate=0.95, error_rate=0.0),
    )
    apply_changes(db, settings, [change], actor="test", dry_run=False)
    with db.transaction() as session:  # applied two hours ago: settled
        session.execute(
            update(CacheTtlChange).values(applied_at=datetime.now(UTC) - timedelta(hours=2))
        )
    for hit in (True, False, False, False):
        metrics.recorder.record("cache_operations", None, {"cache": "redis", "toolName": "weather",
                                                           "op": "get", "hit": hit,
                                                           "latencyMs": 1.0})  # fmt: skip
    assert metrics.flush()
    commands = rows(db, ControlCommand)
    dry = run_flow(optimize_cost, OptimizeCostParams(dry_run=True))
    assert [g["revert"] for g in dry.result["ttl"]["guard"]] == [True]
    assert "weather" in load_policy(db)
    assert rows(db, ControlCommand) == commands
    run = run_flow(optimize_cost, OptimizeCostParams())
    [outcome] = run.result["ttl"]["guard"]
    assert (outcome["tool"], outcome["revert"], outcome["reverted"]) == ("weather", True, True)
    assert outcome["figures_after"]["hit_rate"] == pytest.approx(0.25)
    assert "hit rate fell" in outcome["reason"]
    assert "weather" not in load_policy(db)  # back to no rule, as before the change
    assert rows(db, ControlCommand) == commands + 1
    assert "1 reverted" in run.description(ARTIFACT_KEY)


def test_the_guard_reverts_a_change_whose_measured_stale_rate_rose(
    db: Database, metrics: MetricsRuntime, run_flow: Callable[..., FlowRun]
) -> None:
    """Hit rate held (all gets hits before and after); the processes' published counters say
    half the last hour's hits were served from entries a refetch found changed."""
    settings = get_settings()
    change = PolicyChange(
        "weather",
        None,
        ToolTtl("weather", 1800.0, 3600.0),
        reason="seeded",
        figures_before=Figures(hit_rate=1.0, stale_rate=0.01),
    )
    apply_changes(db, settings, [change], actor="test", dry_run=False)
    now = datetime.now(UTC)
    with db.transaction() as session:  # applied two hours ago: settled
        session.execute(update(CacheTtlChange).values(applied_at=now - timedelta(hours=2)))
    for _ in range(4):
        metrics.recorder.record("cache_operations", None, {"cache": "redis", "toolName": "weather",
                                                           "op": "get", "hit": True,
                                                           "latencyMs": 1.0})  # fmt: skip
    assert metrics.flush()
    started = now - timedelta(hours=3)
    publish(db, [], [Counters("replica-a", started, "weather", now - timedelta(minutes=70), 100, 1),
                     Counters("replica-a", started, "weather", now - timedelta(minutes=1), 300, 101)])  # fmt: skip
    run = run_flow(optimize_cost, OptimizeCostParams())
    [outcome] = run.result["ttl"]["guard"]
    assert (outcome["tool"], outcome["revert"], outcome["reverted"]) == ("weather", True, True)
    assert outcome["figures_after"]["hit_rate"] == pytest.approx(1.0)
    assert outcome["figures_after"]["stale_rate"] == pytest.approx(0.5)
    assert outcome["reason"] == "stale rate rose 0.010 -> 0.500"
    assert "weather" not in load_policy(db)
