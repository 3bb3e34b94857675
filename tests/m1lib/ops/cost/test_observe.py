"""A process feeds its TTL optimiser from a real cache (memory backend, one fake clock) and
publishes per-tool rows; bounds; long-age refetches of tools without a rule are seen."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from m1lib.cache import Cache
from m1lib.db.session import Database
from m1lib.ops.cost.observe import CacheFeed, load_observations
from m1lib.ops.cost.policy import ToolTtl
from m1lib.ops.cost.policy_refresh import PolicyRefresher
from m1lib.ops.cost.policy_store import set_tool
from m1lib.settings import Settings
from tests.waiting import wait_for


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def traffic(cache: Cache, clock: FakeClock, *, keys: int, hours: float, step_s: float) -> int:
    """Each key asked every ``step_s``; its value changes every 2 hours; the number of gets."""
    gets = 0
    for _ in range(int(hours * 3600 / step_s)):
        clock.now += step_s
        version = int(clock.now // 7200)
        for k in range(keys):
            value = f"{k}-{version}"
            cache.cached_call(f"k{k}", lambda value=value: value, tool_name="weather")
            gets += 1
    return gets


def test_a_process_feeds_its_optimiser_from_its_cache_and_publishes_rows(
    make_settings: Callable[..., Settings], db: Database
) -> None:
    settings = make_settings(cache={"default_ttl_s": 120.0, "policy_refresh_s": 0})
    set_tool(db, settings, ToolTtl("weather", 120.0, 1800.0), actor="t")
    clock = FakeClock()
    cache = Cache(settings, clock=clock, wall_clock=clock)
    feed = CacheFeed(settings, "replica-a", clock=clock, wall_clock=clock)
    refresher = PolicyRefresher(settings, db=db, cache=cache, feed=feed)
    refresher.reload()  # the rule's budget reaches the optimiser
    gets = traffic(cache, clock, keys=5, hours=3, step_s=30)
    assert refresher.publish() == 1
    assert refresher.publish() == 1  # upserted: still one row
    [row] = load_observations(db, since=datetime.now(UTC) - timedelta(minutes=5))
    assert (row.process, row.tool, row.tracked_keys) == ("replica-a", "weather", 5)
    assert row.reason.startswith("cost-benefit"), row.reason
    assert 60.0 <= row.ttl_s <= 1800.0  # within the rule's staleness budget
    assert sum(row.requests_by_hour) == gets
    assert row.requests_per_h > 0
    assert row.change_rate_per_h is not None
    assert 0.1 < row.change_rate_per_h < 2.0  # the values change every 2 h: 0.5 per hour


def test_the_feed_follows_at_most_max_keys_per_tool(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(cost={"ttl_max_keys": 3})
    clock = FakeClock()
    cache = Cache(settings, clock=clock, wall_clock=clock)
    feed = CacheFeed(settings, "p", clock=clock, wall_clock=clock)
    feed.attach(cache)
    for k in range(10):
        cache.cached_call(f"k{k}", lambda: 1, tool_name="weather")
    [obs] = feed.observations()
    assert obs.tracked_keys == 3
    assert feed.dropped == 14  # 7 keys: a get and a fill each


def test_a_refetch_hours_later_of_a_tool_without_a_rule_is_observed(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(cache={"default_ttl_s": 3600.0})
    clock = FakeClock()
    cache = Cache(settings, clock=clock, wall_clock=clock)
    feed = CacheFeed(settings, "p", clock=clock, wall_clock=clock)
    feed.attach(cache)
    seen: list[tuple[Any, ...]] = []
    observe_fetch = feed.optimiser.observe_fetch

    def spy(tool: str, key: str, t: float, age_s: float | None, changed: bool | None) -> None:
        seen.append((age_s, changed))
        observe_fetch(tool, key, t, age_s, changed)

    feed.optimiser.observe_fetch = spy  # type: ignore[method-assign]
    cache.cached_call("k", lambda: "a", tool_name="search")
    clock.now += 7300  # past the hour's TTL: the cache's own fetch observer would not see this
    cache.cached_call("k", lambda: "b", tool_name="search")
    clock.now += 7300
    cache.cached_call("k", lambda: "b", tool_name="search")
    assert seen == [(None, None), (7300.0, True), (7300.0, False)]


def test_the_refresh_loop_publishes_by_itself(
    make_settings: Callable[..., Settings], db: Database
) -> None:
    settings = make_settings(cache={"policy_refresh_s": 0}, cost={"ttl_publish_s": 0.2})
    cache = Cache(settings)
    refresher = PolicyRefresher(settings, db=db, cache=cache, process="svc-1")
    cache.cached_call("k", lambda: 1, tool_name="weather")
    refresher.start()
    try:
        since = datetime.now(UTC) - timedelta(minutes=5)
        [row] = wait_for(lambda: load_observations(db, since=since), "the first publish")
        assert (row.process, row.tool, row.reason) == ("svc-1", "weather", "baseline: warming up")
        first = row.updated_at
        assert first is not None
        wait_for(
            lambda: load_observations(db, since=first + timedelta(microseconds=1)),
            "a later publish, with no periodic policy reload",
        )
    finally:
        refresher.stop()
