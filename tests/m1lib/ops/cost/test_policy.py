from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from m1lib.cache import TtlRule
from m1lib.errors import InputError
from m1lib.ops.cost.policy import (
    MAX_TTL_S,
    PolicySnapshot,
    Proposal,
    ToolTtl,
    check_policy,
    clamp,
    recommend_changes,
    stale_mode_proposals,
)

HOUR = 3600.0
seconds = st.floats(min_value=0.001, max_value=MAX_TTL_S, allow_nan=False)


def rule(tool: str = "weather", **overrides: object) -> ToolTtl:
    values: dict[str, object] = {"tool": tool, "ttl_s": 60.0, "staleness_budget_s": 300.0}
    values.update(overrides)
    return ToolTtl(**values)  # type: ignore[arg-type]


@settings(deadline=None, max_examples=200)
@given(
    ttl=seconds,
    budget=seconds,
    swr=st.floats(min_value=0, max_value=MAX_TTL_S, allow_nan=False),
    peak=st.none() | seconds,
    offpeak=st.none() | seconds,
)
def test_recommended_ttls_stay_within_the_staleness_budget(
    ttl: float, budget: float, swr: float, peak: float | None, offpeak: float | None
) -> None:
    hours = (8, 18) if peak is not None or offpeak is not None else None
    proposal = Proposal(
        "t", ttl_s=ttl, staleness_budget_s=budget, stale_while_revalidate_s=swr,
        peak_ttl_s=peak, offpeak_ttl_s=offpeak, peak_hours=hours,
    )  # fmt: skip
    (change,) = recommend_changes({}, [proposal])
    after = change.after
    check_policy(after)  # what apply_changes stores passes its own check
    assert after.max_ttl_s() + after.stale_while_revalidate_s <= budget
    for hour in range(24):
        served = after.rule_at(hour * HOUR)
        assert served.ttl_s + served.stale_s <= budget
    assert change.clamped == (
        ttl > budget
        or (peak or 0) > budget
        or (offpeak or 0) > budget
        or after.stale_while_revalidate_s < swr
    )


def test_clamp_keeps_a_policy_within_its_budget_unchanged() -> None:
    policy = rule(stale_while_revalidate_s=100.0)
    assert clamp(policy) == policy


def test_recommend_leaves_out_proposals_that_change_nothing() -> None:
    current = {"weather": rule()}
    assert recommend_changes(current, [Proposal("weather", ttl_s=60.0)]) == []
    (change,) = recommend_changes(current, [Proposal("weather", ttl_s=120.0, reason="cheaper")])
    assert change.before == current["weather"]
    assert (change.after.ttl_s, change.after.staleness_budget_s) == (120.0, 300.0)
    assert change.reason == "cheaper"
    assert not change.clamped


def test_recommend_needs_a_budget_for_a_tool_without_policy() -> None:
    with pytest.raises(InputError) as caught:
        recommend_changes({}, [Proposal("new", ttl_s=10.0)])
    assert caught.value.path == "proposals[0].staleness_budget_s"
    (change,) = recommend_changes({}, [Proposal("new", ttl_s=10.0)], default_budget_s=5.0)
    assert change.after.ttl_s == 5.0
    assert change.clamped


@pytest.mark.parametrize(
    ("overrides", "path"),
    [
        ({"ttl_s": 0}, "ttl_s"),
        ({"ttl_s": float("nan")}, "ttl_s"),
        ({"ttl_s": 301.0}, "ttl_s"),
        ({"staleness_budget_s": -1.0}, "staleness_budget_s"),
        ({"stale_while_revalidate_s": 250.0}, "ttl_s"),
        ({"peak_ttl_s": 10.0}, "peak_hours"),
        ({"peak_ttl_s": 10.0, "peak_hours": (3, 3)}, "peak_hours"),
        ({"peak_ttl_s": 10.0, "peak_hours": (3, 24)}, "peak_hours"),
        ({"tool": ""}, "tool"),
    ],
)
def test_check_policy_names_the_field_and_the_allowed_range(
    overrides: dict[str, object], path: str
) -> None:
    with pytest.raises(InputError) as caught:
        check_policy(rule(**overrides))
    assert caught.value.path == path
    assert caught.value.allowed


def test_peak_and_offpeak_ttls_follow_the_utc_hour() -> None:
    day = rule(peak_ttl_s=30.0, offpeak_ttl_s=240.0, peak_hours=(8, 18))
    assert day.ttl_at(9 * HOUR) == 30.0
    assert day.ttl_at(18 * HOUR) == 240.0
    night = replace(day, peak_hours=(22, 6), offpeak_ttl_s=None)
    assert night.ttl_at(23 * HOUR) == 30.0
    assert night.ttl_at(3 * HOUR + 24 * HOUR) == 30.0
    assert night.ttl_at(12 * HOUR) == 60.0  # no off-peak TTL: the plain one


def test_snapshot_resolves_tools_it_holds_only() -> None:
    snapshot = PolicySnapshot([rule(stale_while_revalidate_s=20.0)], version=3)
    assert snapshot("weather") == TtlRule(60.0, 20.0)
    assert snapshot("other") is None
    assert len(snapshot) == 1
    assert snapshot.version == 3


def test_over_budget_mode_serves_stale_for_the_room_the_budget_leaves() -> None:
    current = {"weather": rule(), "full": rule("full", ttl_s=300.0)}
    (proposal,) = stale_mode_proposals(current, over_budget=True)
    assert (proposal.tool, proposal.stale_while_revalidate_s) == ("weather", 240.0)
    (change,) = recommend_changes(current, [proposal])
    assert change.after.ttl_s + change.after.stale_while_revalidate_s == 300.0
    back = {"weather": change.after, "full": current["full"]}
    (off,) = stale_mode_proposals(back, over_budget=False)
    assert off.stale_while_revalidate_s == 0.0
    assert stale_mode_proposals(current, over_budget=False) == []
