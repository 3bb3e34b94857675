"""The measured stale rate: a feed counts suspect hits on a real memory cache (fake clock), the
published counters give a window's rate across processes and a restart, and the guard reverts a
change whose measured stale rate rose while hit and error rates held."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from m1lib.cache import Cache
from m1lib.db.models import CacheTtlCounter
from m1lib.db.session import Database
from m1lib.ops.cost.figures import with_stale_rates
from m1lib.ops.cost.observe import CacheFeed, publish
from m1lib.ops.cost.policy import Figures, Proposal, ToolTtl, recommend_changes
from m1lib.ops.cost.policy_refresh import PolicyRefresher
from m1lib.ops.cost.policy_store import apply_changes, list_changes, load_policy, set_tool
from m1lib.ops.cost.staleness import Counters, load_counters, load_stale_rates, stale_rates
from m1lib.ops.cost.ttl_guard import guard_check
from m1lib.settings import Settings

T0 = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def fed_cache(settings: Settings) -> tuple[Cache, CacheFeed, FakeClock]:
    clock = FakeClock()
    cache = Cache(settings, clock=clock, wall_clock=clock)
    feed = CacheFeed(settings, "p", clock=clock, wall_clock=clock)
    feed.attach(cache)
    return cache, feed, clock


def counts(feed: CacheFeed, tool: str) -> tuple[int, int, int, int]:
    [row] = [c for c in feed.counters() if c.tool == tool]
    return row.hits, row.suspect_hits, row.refetches, row.changed


def test_hits_before_a_changed_refetch_are_suspect_before_an_unchanged_one_fresh(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(cache={"default_ttl_s": 60.0})
    cache, feed, clock = fed_cache(settings)
    cache.cached_call("k", lambda: "a", tool_name="weather")  # a miss: the fill
    for _ in range(4):
        clock.now += 10
        cache.cached_call("k", lambda: "unused", tool_name="weather")  # 4 hits
    clock.now += 60  # expired: the refetch finds the value changed
    cache.cached_call("k", lambda: "b", tool_name="weather")
    assert counts(feed, "weather") == (4, 4, 1, 1)
    for _ in range(3):
        clock.now += 10
        cache.cached_call("k", lambda: "unused", tool_name="weather")  # 3 hits
    clock.now += 60  # the refetch finds the same value: those hits were fresh
    cache.cached_call("k", lambda: "b", tool_name="weather")
    assert counts(feed, "weather") == (7, 4, 2, 1)
    [row] = feed.counters()
    assert (row.process, row.started_at) == ("p", datetime.fromtimestamp(1_800_000_000.0, UTC))


def test_suspect_hits_are_counted_per_key(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(cache={"default_ttl_s": 60.0})
    cache, feed, clock = fed_cache(settings)
    for key in ("changes", "steady"):
        cache.cached_call(key, lambda: "v1", tool_name="search")
    clock.now += 10
    for _ in range(2):
        cache.cached_call("changes", lambda: "unused", tool_name="search")
        cache.cached_call("steady", lambda: "unused", tool_name="search")
    clock.now += 60
    cache.cached_call("changes", lambda: "v2", tool_name="search")
    cache.cached_call("steady", lambda: "v1", tool_name="search")
    assert counts(feed, "search") == (4, 2, 2, 1)


def row(process: str, minutes: int, hits: int, suspect: int, started: int = -600) -> Counters:
    return Counters(process, T0 + timedelta(minutes=started), "weather",
                    T0 + timedelta(minutes=minutes), hits, suspect)  # fmt: skip


def test_a_window_stale_rate_is_the_counter_difference_summed_over_processes() -> None:
    rows = [
        row("a", -5, 100, 10),  # the baseline: the row nearest the window's start
        row("a", 30, 150, 15),
        row("a", 60, 200, 30),  # a: 100 hits, 20 suspect in the window
        row("b", -5, 500, 0),
        row("b", 20, 520, 0),  # b restarts (its counters fall) at minute 25
        row("b", 40, 30, 5, started=25),
        row("b", 60, 80, 10, started=25),  # b: 20 + 80 hits, 0 + 10 suspect
        row("c", 70, 999, 999),  # after the window: ignored
    ]
    rates = stale_rates(rows, T0, T0 + timedelta(hours=1))
    assert rates == {"weather": 30 / 200}
    # a decrease alone (same started_at) is a restart too
    same_start = [row("d", -5, 50, 5), row("d", 30, 10, 1), row("d", 60, 40, 2)]
    assert stale_rates(same_start, T0, T0 + timedelta(hours=1)) == {"weather": 2 / 40}
    # a process that began inside the window counts from zero; no hits: no rate
    assert stale_rates([row("e", 30, 10, 5, started=10)], T0, T0 + timedelta(hours=1)) == {
        "weather": 0.5
    }
    assert (
        stale_rates([row("f", -5, 10, 1), row("f", 30, 10, 1)], T0, T0 + timedelta(hours=1)) == {}
    )


def test_published_counters_load_back_and_old_ones_are_pruned(
    make_settings: Callable[..., Settings], db: Database
) -> None:
    settings = make_settings(cache={"default_ttl_s": 60.0})
    cache, feed, clock = fed_cache(settings)
    cache.cached_call("k", lambda: "a", tool_name="weather")
    now = datetime.now(UTC)
    old = Counters("gone", now - timedelta(days=3), "weather", now - timedelta(days=2), 5, 5)
    publish(db, [], [old])
    publish(db, feed.observations(), feed.counters(now - timedelta(minutes=30)))
    clock.now += 10
    cache.cached_call("k", lambda: "x", tool_name="weather")
    clock.now += 60
    cache.cached_call("k", lambda: "b", tool_name="weather")  # 1 hit, suspect
    publish(db, feed.observations(), feed.counters(now))
    loaded = load_counters(db, now - timedelta(days=4), now)
    assert [(c.process, c.hits, c.suspect_hits) for c in loaded] == [("p", 0, 0), ("p", 1, 1)]
    assert load_stale_rates(db, now - timedelta(minutes=20), now) == {"weather": 1.0}


def test_the_guard_reverts_a_change_whose_measured_stale_rate_rose(
    make_settings: Callable[..., Settings], db: Database
) -> None:
    settings = make_settings()
    set_tool(db, settings, ToolTtl("weather", 60.0, 3600.0), actor="t")
    now = datetime.now(UTC)
    hour = timedelta(hours=1)
    start = now - 3 * hour  # one process: 1000 hits an hour, 1 % suspect, then 20 % after

    def suspect(m: int) -> int:  # 10 in the first hour, 200 an hour from the second on
        return 10 * m // 60 if m <= 60 else 10 + 200 * (m - 60) // 60

    history = [
        Counters("p", start, "weather", start + timedelta(minutes=m), 1000 * m // 60, suspect(m))
        for m in range(0, 181, 5)
    ]
    publish(db, [], history)
    held = Figures(hit_rate=0.8, error_rate=0.01)  # the event figures, the same both hours
    before = with_stale_rates({"weather": held}, load_stale_rates(db, start, start + hour))
    assert before["weather"].stale_rate == 10 / 1000
    changes = recommend_changes(
        load_policy(db), [Proposal("weather", ttl_s=1800.0, figures=before["weather"])]
    )
    apply_changes(db, settings, changes, actor="optimize-cost", dry_run=False)
    (logged, *_) = list_changes(db, tool="weather")  # newest first
    assert logged.figures_before is not None
    assert logged.figures_before.stale_rate == 10 / 1000  # recorded at apply time
    after = with_stale_rates({"weather": held}, load_stale_rates(db, now - hour, now))
    assert after["weather"].stale_rate == 200 / 1000
    [outcome] = [
        o for o in guard_check(db, settings, after, settle_s=0) if o.change.id == logged.id
    ]
    assert outcome.reverted
    assert outcome.verdict.reasons == ("stale rate rose 0.010 -> 0.200",)
    assert load_policy(db)["weather"].ttl_s == 60.0


def test_the_refresher_publishes_the_feed_counters(
    make_settings: Callable[..., Settings], db: Database
) -> None:
    settings = make_settings(cache={"default_ttl_s": 60.0, "policy_refresh_s": 0})
    cache, feed, clock = fed_cache(settings)
    refresher = PolicyRefresher(settings, db=db, cache=cache, feed=feed)
    cache.cached_call("k", lambda: "a", tool_name="weather")
    clock.now += 10
    cache.cached_call("k", lambda: "x", tool_name="weather")
    assert refresher.publish() == 1
    assert refresher.publish() == 1
    now = datetime.now(UTC)
    loaded = load_counters(db, now - timedelta(hours=1), now)
    assert [(c.process, c.tool, c.hits, c.started_at) for c in loaded] == [
        ("p", "weather", 1, feed.started_at)
    ] * 2  # appended, not upserted


def test_on_postgres_publishers_prune_old_counters_without_waiting_on_each_other(
    pg_db: Database,
) -> None:
    """One publisher holds the old rows it is deleting; another's publish skips them (no wait,
    no deadlock); they go with whoever commits the delete."""
    process = f"pg-{uuid.uuid4().hex[:8]}"
    now = datetime.now(UTC)
    old = [Counters(process, now - timedelta(days=3), "weather", now - timedelta(days=2), i, 0)
           for i in range(3)]  # fmt: skip
    publish(pg_db, [], old)
    with pg_db.transaction() as holder:
        locked = holder.scalars(
            select(CacheTtlCounter.id).where(CacheTtlCounter.process == process).with_for_update()
        ).all()
        assert len(locked) == 3
        publish(pg_db, [], [Counters(process, now, "weather", now, 1, 0)])  # returns: skipped
    publish(pg_db, [], [Counters(process, now, "weather", now, 2, 0)])
    with pg_db.transaction() as session:
        left = session.scalars(
            select(CacheTtlCounter.hits).where(CacheTtlCounter.process == process)
        ).all()
    assert sorted(left) == [1, 2]
