"""`Cache.cached_call` under a TTL policy: the tool's TTL, stale-while-revalidate and what a
refetch observes. Time is one injected clock (monotonic and wall alike)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis as redis_lib
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from m1lib.cache import OBSERVE_GRACE_MAX_S, Cache, TtlRule
from m1lib.ops.cost.policy import PolicySnapshot, ToolTtl, clamp
from m1lib.redis_conn import key as redis_key
from m1lib.settings import Settings
from tests.waiting import wait_for

DEFAULT_TTL_S = 60.0


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Source:
    """A loader whose value the test changes; counts its calls, may block until released."""

    def __init__(self, value: Any = "v1") -> None:
        self.value = value
        self.calls = 0
        self.gate: threading.Event | None = None

    def __call__(self) -> Any:
        self.calls += 1
        if self.gate is not None:
            assert self.gate.wait(30)
        return self.value


Observed = list[tuple[str, str, float | None, bool | None]]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def with_policy(cache: Cache, rules: dict[str, TtlRule]) -> Observed:
    observed: Observed = []
    cache.set_ttl_policy(rules.get)
    cache.set_fetch_observer(lambda *seen: observed.append(seen))
    return observed


@pytest.fixture
def cache(make_settings: Callable[..., Settings], clock: FakeClock) -> Cache:
    settings = make_settings(cache={"default_ttl_s": DEFAULT_TTL_S})
    return Cache(settings, clock=clock, wall_clock=clock)


def test_cached_call_uses_the_tool_ttl_of_the_policy(cache: Cache, clock: FakeClock) -> None:
    with_policy(cache, {"weather": TtlRule(10.0)})
    source = Source()
    assert cache.cached_call("k", source, tool_name="weather") == "v1"
    clock.advance(9.9)
    assert cache.cached_call("k", source, tool_name="weather") == "v1"
    assert source.calls == 1
    clock.advance(0.2)
    assert cache.get("k") is None  # past its TTL the entry reads as a miss
    assert cache.cached_call("k", source, tool_name="weather") == "v1"
    assert source.calls == 2


def test_a_shortened_ttl_applies_to_entries_stored_before(cache: Cache, clock: FakeClock) -> None:
    rules = {"weather": TtlRule(100.0)}
    with_policy(cache, rules)
    source = Source()
    cache.cached_call("k", source, tool_name="weather")
    rules["weather"] = TtlRule(10.0)
    clock.advance(11)
    cache.cached_call("k", source, tool_name="weather")
    assert source.calls == 2


def test_an_explicit_ttl_wins_over_the_policy(cache: Cache, clock: FakeClock) -> None:
    with_policy(cache, {"weather": TtlRule(10.0)})
    source = Source()
    cache.cached_call("k", source, ttl=100.0, tool_name="weather")
    clock.advance(50)
    cache.cached_call("k", source, ttl=100.0, tool_name="weather")
    assert source.calls == 1


def test_a_tool_without_a_rule_keeps_the_default_ttl(cache: Cache, clock: FakeClock) -> None:
    with_policy(cache, {"weather": TtlRule(10.0)})
    source = Source()
    cache.cached_call("k", source, tool_name="search")
    clock.advance(DEFAULT_TTL_S - 1)
    cache.cached_call("k", source, tool_name="search")
    assert source.calls == 1


def test_refetch_reports_whether_the_value_changed_and_its_age(
    cache: Cache, clock: FakeClock
) -> None:
    observed = with_policy(cache, {"weather": TtlRule(10.0)})
    source = Source()
    cache.cached_call("k", source, tool_name="weather")
    clock.advance(11)
    cache.cached_call("k", source, tool_name="weather")  # same value
    source.value = "v2"
    clock.advance(12)
    cache.cached_call("k", source, tool_name="weather")  # changed
    clock.advance(10 + OBSERVE_GRACE_MAX_S + 1)  # the old entry is gone: nothing to compare
    cache.cached_call("k", source, tool_name="weather")
    assert observed == [
        ("weather", "k", None, None),
        ("weather", "k", 11.0, False),
        ("weather", "k", 12.0, True),
        ("weather", "k", None, None),
    ]


def test_stale_while_revalidate_serves_the_old_value_while_one_refresh_runs(
    cache: Cache, clock: FakeClock
) -> None:
    with_policy(cache, {"weather": TtlRule(10.0, stale_s=30.0)})
    source = Source()
    cache.cached_call("k", source, tool_name="weather")
    source.value, source.gate = "v2", threading.Event()
    clock.advance(15)  # expired, within the stale window
    served = [cache.cached_call("k", source, tool_name="weather") for _ in range(5)]
    assert served == ["v1"] * 5  # nobody waits for the refresh
    wait_for(lambda: source.calls == 2, "the one background refresh to start")
    source.gate.set()
    wait_for(lambda: cache.get("k"), "the refreshed value", until=lambda v: v == "v2")
    assert source.calls == 2
    assert cache.stats().hits >= 5  # each stale serve saved a call: counted as a hit


def test_past_the_stale_window_a_caller_waits_for_the_fresh_value(
    cache: Cache, clock: FakeClock
) -> None:
    with_policy(cache, {"weather": TtlRule(10.0, stale_s=30.0)})
    source = Source()
    cache.cached_call("k", source, tool_name="weather")
    source.value = "v2"
    clock.advance(41)
    assert cache.cached_call("k", source, tool_name="weather") == "v2"


def test_a_failed_refresh_keeps_serving_stale_within_the_window(
    cache: Cache, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    with_policy(cache, {"weather": TtlRule(10.0, stale_s=30.0)})
    cache.cached_call("k", Source(), tool_name="weather")
    failed = threading.Event()

    def broken() -> Any:
        failed.set()
        raise RuntimeError("upstream down")

    clock.advance(15)
    assert cache.cached_call("k", broken, tool_name="weather") == "v1"
    assert failed.wait(30)
    wait_for(lambda: "refresh of a weather entry failed" in caplog.text, "the logged failure")
    assert cache.cached_call("k", Source("v3"), tool_name="weather") in ("v1", "v3")


@pytest.fixture
def redis_caches(
    make_settings: Callable[..., Settings], shared_redis_url: str, redis_prefix: str
) -> Iterator[tuple[Cache, Cache, Settings]]:
    settings = make_settings(redis={"url": shared_redis_url, "prefix": redis_prefix})
    one, two = Cache.from_settings(settings), Cache.from_settings(settings)
    yield one, two, settings
    one.close()
    two.close()


@pytest.mark.redis
def test_policy_entries_are_shared_through_redis_with_ttl_plus_grace(
    redis_caches: tuple[Cache, Cache, Settings], shared_redis_url: str
) -> None:
    one, two, settings = redis_caches
    with_policy(one, {"weather": TtlRule(120.0)})
    source = Source({"temp": 21})
    assert one.cached_call("k", source, tool_name="weather") == {"temp": 21}
    assert two.cached_call("k", source, tool_name="weather") == {"temp": 21}  # no policy there
    assert two.get("k") == {"temp": 21}
    assert source.calls == 1
    raw = redis_lib.Redis.from_url(shared_redis_url)
    try:
        pttl = raw.pttl(redis_key(settings, "cache", "k"))
    finally:
        raw.close()
    assert 120_000 < pttl <= (120 + OBSERVE_GRACE_MAX_S) * 1000


# make_settings is a factory: a fresh Settings (and cache) per example
@settings(
    deadline=None, max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    ttl=st.floats(min_value=0.01, max_value=1000),
    budget=st.floats(min_value=0.01, max_value=1000),
    swr=st.floats(min_value=0, max_value=1000),
    steps=st.lists(st.floats(min_value=0, max_value=500), min_size=1, max_size=30),
)
def test_what_cached_call_serves_is_never_older_than_the_staleness_budget(
    make_settings: Callable[..., Settings],
    ttl: float,
    budget: float,
    swr: float,
    steps: list[float],
) -> None:
    rule = clamp(ToolTtl("t", ttl, budget, stale_while_revalidate_s=swr))
    clock = FakeClock()
    cache = Cache(make_settings(), clock=clock, wall_clock=clock)
    cache.set_ttl_policy(PolicySnapshot([rule]))
    for step in steps:
        clock.advance(step)
        fetched_at = cache.cached_call("k", clock, tool_name="t")
        assert clock.now - fetched_at <= budget + 0.002  # whole milliseconds in the header
