"""Planning TTL changes from published rows: combining processes, peak/off-peak, stale mode."""

from __future__ import annotations

import math

import pytest

from m1lib.ops.cost.observe import Observation
from m1lib.ops.cost.policy import Figures, ToolTtl, recommend_changes
from m1lib.ops.cost.ttl_plan import combine, peak_range, plan

FLAT = (100,) * 24


def obs(process: str, ttl: float, requests: float, hours: tuple[int, ...] = FLAT) -> Observation:
    return Observation(process, "weather", ttl, "cost-benefit", requests, 0.5, 0.1, 0.2, 1.0, 2.0,
                       requests_by_hour=hours)  # fmt: skip


def test_two_processes_combine_weighted_by_their_request_volume() -> None:
    warming = Observation("c", "weather", 300.0, "baseline: warming up", 1000.0)
    [(tool, c)] = combine([obs("a", 600.0, 100.0), obs("b", 1200.0, 300.0), warming]).items()
    assert (tool, c.processes, c.learned) == ("weather", 3, 2)
    assert c.ttl_s == pytest.approx(1050.0)
    assert c.requests_per_h == 1400.0
    assert c.expected_spend_usd_per_h == pytest.approx(0.2)  # summed over the learned ones
    assert c.requests_by_hour == tuple(200 for _ in range(24))
    assert c.reasons == ("baseline: warming up",)


def test_a_tool_nobody_learned_yet_gets_no_proposal_but_a_note() -> None:
    warming = Observation("c", "search", 300.0, "baseline: warming up", 10.0)
    result = plan([warming], {}, {}, peak_hours=[], over_budget=False, default_budget_s=3600,
                  peak_ratio=2.0)  # fmt: skip
    assert result.proposals == []
    assert result.notes["search"] == "no proposal: baseline: warming up"


def test_peak_hours_form_one_range_even_across_midnight() -> None:
    assert peak_range([9, 10, 11]) == (9, 12)
    assert peak_range([22, 23, 0, 1]) == (22, 2)
    assert peak_range([9, 11]) is None  # two ranges
    assert peak_range([]) is None


def test_a_busier_peak_gets_a_shorter_peak_ttl_by_the_square_root_rule() -> None:
    hours = tuple(400 if 9 <= h < 12 else 100 for h in range(24))
    figures = {"weather": Figures(hit_rate=0.9)}
    result = plan([obs("a", 1000.0, 100.0, hours)], {}, figures, peak_hours=[9, 10, 11],
                  over_budget=False, default_budget_s=3600, peak_ratio=2.0)  # fmt: skip
    [p] = result.proposals
    mean = (3 * 400 + 21 * 100) / 24
    assert p.peak_hours == (9, 12)
    assert p.peak_ttl_s == pytest.approx(1000 * math.sqrt(mean / 400))
    assert p.offpeak_ttl_s == pytest.approx(1000 * math.sqrt(mean / 100))
    assert (p.staleness_budget_s, p.figures) == (3600, figures["weather"])
    [change] = recommend_changes({}, result.proposals)
    assert change.after.ttl_at(10 * 3600) < change.after.ttl_at(15 * 3600)


def test_flat_traffic_or_no_peaks_keep_one_ttl_and_say_why() -> None:
    flat = plan([obs("a", 1000.0, 100.0)], {}, {}, peak_hours=[9], over_budget=False,
                default_budget_s=3600, peak_ratio=2.0)  # fmt: skip
    assert flat.proposals[0].peak_ttl_s is None
    assert "below the 2x" in flat.notes["weather"]
    none = plan([obs("a", 1000.0, 100.0)], {}, {}, peak_hours=[], over_budget=False,
                default_budget_s=3600, peak_ratio=2.0)  # fmt: skip
    assert "found no peak hours" in none.notes["weather"]


def test_over_budget_adds_stale_while_revalidate_within_the_budget() -> None:
    current = {"weather": ToolTtl("weather", 600.0, 3600.0)}
    result = plan([obs("a", 1200.0, 100.0)], current, {}, peak_hours=[], over_budget=True,
                  default_budget_s=3600, peak_ratio=2.0)  # fmt: skip
    [p] = result.proposals
    assert (p.ttl_s, p.staleness_budget_s, p.stale_while_revalidate_s) == (1200.0, None, 3000.0)
    [change] = recommend_changes(current, result.proposals)
    assert change.after.ttl_s + change.after.stale_while_revalidate_s <= 3600.0
    assert change.clamped  # the swr was cut to what the longer TTL leaves


def test_within_budget_only_the_flows_own_stale_windows_go_off() -> None:
    by_hand = ToolTtl("a", 600.0, 3600.0, stale_while_revalidate_s=60.0, updated_by="ops")
    by_flow = ToolTtl("b", 600.0, 3600.0, stale_while_revalidate_s=60.0, updated_by="optimize-cost")
    result = plan([], {"a": by_hand, "b": by_flow}, {}, peak_hours=[], over_budget=False,
                  default_budget_s=3600, peak_ratio=2.0)  # fmt: skip
    assert [(p.tool, p.stale_while_revalidate_s) for p in result.proposals] == [("b", 0.0)]


def test_peak_ttls_stay_within_what_a_policy_holds() -> None:
    hours = tuple(10**9 if h == 3 else 1 for h in range(24))
    result = plan([obs("a", 86400.0, 100.0, hours)], {}, {}, peak_hours=[3], over_budget=False,
                  default_budget_s=3600, peak_ratio=2.0)  # fmt: skip
    [p] = result.proposals
    assert p.offpeak_ttl_s == 30 * 86400.0
    assert p.peak_ttl_s is not None
    assert p.peak_ttl_s >= 60.0
    recommend_changes({}, result.proposals)  # no InputError: clamped to the budget
