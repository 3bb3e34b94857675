"""The TTL optimiser: bounds, direction of its choices, and that it learns only from observations.

Observations come from a tiny cache simulation (Poisson requests and changes per key at a fixed
TTL), fed exactly as a cache would: a get per request, and on a miss the replaced value's age and
whether the new one differs.
"""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from m1lib.errors import InputError
from m1lib.ops.cost.optimiser import OptimiserConfig, TtlChoice, TtlOptimiser

HOUR = 3600.0


def feed(
    optimiser: TtlOptimiser,
    tool: str,
    *,
    change_rate: float,
    ttl: float,
    keys: int = 20,
    rate_per_key: float = 0.05,
    seconds: float = 4 * HOUR,
    seed: int = 1,
    report_changes: bool = True,
) -> None:
    """Replay one tool's Poisson requests through a TTL cache into the optimiser, in time order."""
    rng = random.Random(seed)
    events: list[tuple[float, int]] = []
    for key in range(keys):
        t = rng.expovariate(rate_per_key)
        while t < seconds:
            events.append((t, key))
            t += rng.expovariate(rate_per_key)
    events.sort()
    versions = [0] * keys
    changed_at = [0.0] * keys
    cached: dict[int, tuple[float, int]] = {}  # key -> (fetched at, version)
    for t, key in events:
        while changed_at[key] <= t:  # catch the key's changes up to t
            if changed_at[key] > 0:
                versions[key] += 1
            changed_at[key] += rng.expovariate(change_rate)
        entry = cached.get(key)
        hit = entry is not None and t < entry[0] + ttl
        optimiser.observe_get(tool, f"k{key}", t, hit)
        if not hit:
            if entry is None or not report_changes:
                optimiser.observe_fetch(tool, f"k{key}", t, None, None)
            else:
                optimiser.observe_fetch(tool, f"k{key}", t, t - entry[0], versions[key] != entry[1])
            cached[key] = (t, versions[key])


def test_fast_changing_tool_gets_a_shorter_ttl_than_a_slow_one_at_equal_cost() -> None:
    optimiser = TtlOptimiser(costs={"fast": 0.01, "slow": 0.01})
    feed(optimiser, "fast", change_rate=1 / 300, ttl=600, seed=1)
    feed(optimiser, "slow", change_rate=1 / 50_000, ttl=600, seed=2)
    choices = optimiser.recommend(4 * HOUR)
    assert choices["fast"].reason.startswith("cost-benefit")
    assert choices["slow"].reason.startswith("cost-benefit")
    assert choices["fast"].ttl_s < choices["slow"].ttl_s
    fast_rate = choices["fast"].change_rate_per_h
    slow_rate = choices["slow"].change_rate_per_h
    assert fast_rate is not None
    assert slow_rate is not None
    assert 12 / 2 < fast_rate < 12 * 2  # 1/300 s is 12 an hour: learned from refetches alone
    assert slow_rate < 1.0


def test_an_expensive_miss_gets_a_longer_ttl() -> None:
    optimiser = TtlOptimiser(costs={"cheap": 0.001, "dear": 1.0})
    feed(optimiser, "cheap", change_rate=1 / 3000, ttl=600, seed=3)
    feed(optimiser, "dear", change_rate=1 / 3000, ttl=600, seed=3)
    choices = optimiser.recommend(4 * HOUR)
    assert choices["dear"].ttl_s > choices["cheap"].ttl_s


def test_without_change_information_every_tool_keeps_the_baseline() -> None:
    config = OptimiserConfig(baseline_ttl_s=1800)
    optimiser = TtlOptimiser(config, costs={"a": 0.5, "b": 0.01})
    feed(optimiser, "a", change_rate=1 / 60, ttl=600, report_changes=False)
    feed(optimiser, "b", change_rate=1 / 86_400, ttl=600, report_changes=False, seed=5)
    choices = optimiser.recommend(4 * HOUR)
    assert {name: choice.ttl_s for name, choice in choices.items()} == {"a": 1800, "b": 1800}
    assert all(choice.reason.startswith("baseline") for choice in choices.values())
    assert all(choice.change_rate_per_h is None for choice in choices.values())
    assert choices["a"].requests_per_h == pytest.approx(20 * 0.05 * HOUR, rel=0.2)


def test_baseline_while_warming_up_and_without_a_cost() -> None:
    optimiser = TtlOptimiser(OptimiserConfig(warmup_s=10 * HOUR), costs={"priced": 0.1})
    feed(optimiser, "priced", change_rate=1 / 3000, ttl=600)
    feed(optimiser, "unpriced", change_rate=1 / 3000, ttl=600, seed=4)
    choices = optimiser.recommend(4 * HOUR)
    assert choices["priced"] == TtlChoice(
        3600.0, "baseline: warming up", choices["priced"].requests_per_h
    )
    later = TtlOptimiser(costs={"priced": 0.1})
    feed(later, "unpriced", change_rate=1 / 3000, ttl=600)
    assert later.recommend(4 * HOUR)["unpriced"].reason == "baseline: no cost per call known"
    assert later.recommend(4 * HOUR)["priced"].reason.startswith("baseline")  # never seen


def test_a_tool_whose_every_refetch_changed_is_probed_with_a_short_ttl() -> None:
    optimiser = TtlOptimiser(OptimiserConfig(min_ttl_s=90), costs={"hot": 0.1})
    feed(optimiser, "hot", change_rate=1 / 30, ttl=3600, seconds=8 * HOUR)
    choice = optimiser.recommend(8 * HOUR)["hot"]
    assert (choice.ttl_s, choice.reason) == (90, "probing: every refetch so far found a change")


def test_the_staleness_budget_caps_the_ttl() -> None:
    # Alone, its baseline is the budget (1,200 s): a margin of 1 lets it stay there, no higher.
    config = OptimiserConfig(stale_margin=1.0)
    optimiser = TtlOptimiser(config, costs={"slow": 5.0}, budgets={"slow": 1200})
    feed(optimiser, "slow", change_rate=1 / 500_000, ttl=600)
    choice = optimiser.recommend(4 * HOUR)["slow"]
    assert choice.ttl_s == 1200
    assert choice.reason == "cost-benefit: capped by the staleness budget"


def test_expected_stale_stays_within_the_margin_of_the_baselines() -> None:
    optimiser = TtlOptimiser(costs={"a": 0.02, "b": 0.05, "c": 0.001})
    feed(optimiser, "a", change_rate=1 / 900, ttl=600, seed=1)
    feed(optimiser, "b", change_rate=1 / 20_000, ttl=600, seed=2)
    feed(optimiser, "c", change_rate=1 / 200, ttl=300, seed=3)
    choices = optimiser.recommend(4 * HOUR).values()
    stale = sum(choice.expected_stale_per_h or 0.0 for choice in choices)
    baseline = sum(choice.baseline_stale_per_h or 0.0 for choice in choices)
    assert stale <= optimiser.config.stale_margin * baseline + 1e-9
    spend = sum(choice.expected_spend_usd_per_h or 0.0 for choice in choices)
    assert spend < sum(choice.baseline_spend_usd_per_h or 0.0 for choice in choices)


def test_bad_inputs_name_the_field() -> None:
    optimiser = TtlOptimiser()
    with pytest.raises(InputError, match="cost_usd"):
        optimiser.set_cost("a", -1.0)
    with pytest.raises(InputError, match="budget_s"):
        optimiser.set_budget("a", 10.0)  # below min_ttl_s
    with pytest.raises(InputError, match="age_s"):
        optimiser.observe_fetch("a", "k", 5.0, math.nan, True)
    with pytest.raises(InputError, match="tool"):
        optimiser.observe_get("", "k", 1.0, False)
    with pytest.raises(InputError, match="min_ttl_s"):
        OptimiserConfig(min_ttl_s=100, max_ttl_s=50)
    assert optimiser.recommend(0.0) == {}


observation = st.tuples(
    st.sampled_from(["a", "b", "c"]),
    st.integers(0, 5),
    st.floats(0, 20_000),
    st.one_of(st.none(), st.floats(0, 50_000)),
    st.booleans(),
)


@settings(deadline=None, max_examples=40)
@given(
    min_ttl=st.floats(1, 600),
    span=st.floats(1, 1000),
    budgets=st.dictionaries(st.sampled_from(["a", "b", "c"]), st.floats(0, 1e5)),
    costs=st.dictionaries(st.sampled_from(["a", "b", "c"]), st.floats(0, 10)),
    observations=st.lists(observation, max_size=200),
    warmup=st.floats(0, 5000),
)
def test_every_ttl_stays_within_the_global_bounds_and_the_budget(
    min_ttl: float,
    span: float,
    budgets: dict[str, float],
    costs: dict[str, float],
    observations: list[tuple[str, int, float, float | None, bool]],
    warmup: float,
) -> None:
    config = OptimiserConfig(
        min_ttl_s=min_ttl, max_ttl_s=min_ttl * span, warmup_s=warmup, min_refetches=2
    )
    caps = {tool: min_ttl + seconds for tool, seconds in budgets.items()}
    optimiser = TtlOptimiser(config, costs=costs, budgets=caps)
    t = 0.0
    for tool, key, step, age, changed in observations:
        t += step
        optimiser.observe_get(tool, f"k{key}", t, False)
        optimiser.observe_fetch(tool, f"k{key}", t, age, None if age is None else changed)
    for tool, choice in optimiser.recommend(t).items():
        high = min(config.max_ttl_s, caps.get(tool, math.inf))
        assert config.min_ttl_s <= choice.ttl_s <= high * (1 + 1e-9), (tool, choice)
