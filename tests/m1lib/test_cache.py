"""The cache on real Redis and on memory, its circuit breaker against a killable redis-server,
and `cached_call` coalescing. Time is an injected clock wherever the cache itself keeps time."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis as redis_lib

from m1lib import cache as cache_module
from m1lib.cache import Cache
from m1lib.errors import InputError, UnavailableError
from m1lib.redis_conn import make_redis
from m1lib.settings import Settings
from tests.services import OwnRedis
from tests.waiting import wait_for

PROBE_S = 5.0


class FakeClock:
    """Monotonic time the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class CountingRedis(redis_lib.Redis):
    """A real client that records every command name it sends."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.commands: list[str] = []

    @classmethod
    def on(cls, url: str) -> CountingRedis:
        return cls(connection_pool=redis_lib.ConnectionPool.from_url(url, socket_timeout=1))

    def execute_command(self, *args: Any, **options: Any) -> Any:
        self.commands.append(str(args[0]).upper())
        return super().execute_command(*args, **options)  # type: ignore[no-untyped-call]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def memory_cache(make_settings: Callable[..., Settings], clock: FakeClock) -> Cache:
    return Cache(make_settings(cache={"default_ttl_s": 60, "max_entries": 100}), clock=clock)


@pytest.fixture
def raw_redis(shared_redis_url: str) -> Iterator[redis_lib.Redis]:
    client = redis_lib.Redis.from_url(shared_redis_url)
    yield client
    client.close()


@pytest.fixture
def make_redis_cache(
    make_settings: Callable[..., Settings], shared_redis_url: str, redis_prefix: str
) -> Iterator[Callable[..., Cache]]:
    """Caches on the shared Redis under this test's prefix (or a sub-prefix of it)."""
    made: list[Cache] = []

    def factory(prefix: str = redis_prefix, **cache_overrides: Any) -> Cache:
        settings = make_settings(
            redis={"url": shared_redis_url, "prefix": prefix}, cache=cache_overrides
        )
        made.append(Cache.from_settings(settings))
        return made[-1]

    yield factory
    for cache in made:
        cache.close()


@pytest.fixture
def breaker_cache(
    make_settings: Callable[..., Settings], own_redis: OwnRedis, clock: FakeClock
) -> Iterator[Cache]:
    """A cache on a redis-server the test can kill, probing every PROBE_S of the fake clock."""
    settings = make_settings(
        redis={"url": own_redis.url, "prefix": "m1t", "timeout_s": 1.0},
        cache={"probe_s": PROBE_S, "max_entries": 100},
    )
    client = make_redis(settings)
    assert client is not None
    yield Cache(settings, redis_client=client, clock=clock)
    client.close()


@pytest.fixture
def own_raw(own_redis: OwnRedis) -> Iterator[Callable[[], redis_lib.Redis]]:
    """Fresh raw clients on the test's own server (a new one after each restart)."""
    clients: list[redis_lib.Redis] = []

    def connect() -> redis_lib.Redis:
        clients.append(redis_lib.Redis.from_url(own_redis.url))
        return clients[-1]

    yield connect
    for client in clients:
        client.close()


def go_down(cache: Cache, own_redis: OwnRedis) -> None:
    """Kill the server and let one call trip the breaker."""
    own_redis.stop()
    cache.get("trip")
    assert cache.backend == "memory"


# -- on real Redis ------------------------------------------------------------------------------


def test_redis_cache_returns_what_was_set(make_redis_cache: Callable[..., Cache]) -> None:
    cache = make_redis_cache()
    cache.set("tool:search", {"scopes": ["read"], "limit": 3})
    assert cache.backend == "redis"
    assert cache.get("tool:search") == {"scopes": ["read"], "limit": 3}


def test_redis_cache_stores_json_under_the_namespaced_key(
    make_redis_cache: Callable[..., Cache], raw_redis: redis_lib.Redis, redis_prefix: str
) -> None:
    make_redis_cache().set("k", {"a": 1})
    assert raw_redis.get(f"{redis_prefix}:cache:k") == b'{"a":1}'


def test_redis_cache_delete_removes_the_key(
    make_redis_cache: Callable[..., Cache], raw_redis: redis_lib.Redis, redis_prefix: str
) -> None:
    cache = make_redis_cache()
    cache.set("k", "v")
    cache.delete("k")
    assert cache.get("k") is None
    assert raw_redis.exists(f"{redis_prefix}:cache:k") == 0


def test_redis_cache_puts_the_given_ttl_on_the_key(
    make_redis_cache: Callable[..., Cache], raw_redis: redis_lib.Redis, redis_prefix: str
) -> None:
    make_redis_cache().set("k", 1, ttl=7)
    assert 6000 < raw_redis.pttl(f"{redis_prefix}:cache:k") <= 7000


def test_redis_cache_puts_the_default_ttl_on_the_key(
    make_redis_cache: Callable[..., Cache], raw_redis: redis_lib.Redis, redis_prefix: str
) -> None:
    make_redis_cache(default_ttl_s=42).set("k", 1)
    assert 41000 < raw_redis.pttl(f"{redis_prefix}:cache:k") <= 42000


def test_redis_cache_entry_expires_after_its_ttl(make_redis_cache: Callable[..., Cache]) -> None:
    cache = make_redis_cache()
    cache.set("k", "v", ttl=0.05)
    wait_for(lambda: cache.get("k") is None, "the entry to expire")


# -- on memory ----------------------------------------------------------------------------------


def test_cache_without_redis_url_uses_memory(memory_cache: Cache) -> None:
    memory_cache.set("k", [1, "two", None])
    assert memory_cache.backend == "memory"
    assert memory_cache.get("k") == [1, "two", None]


def test_memory_cache_delete_removes_the_key(memory_cache: Cache) -> None:
    memory_cache.set("k", "v")
    memory_cache.delete("k")
    assert memory_cache.get("k") is None


def test_memory_cache_entry_expires_after_its_ttl(memory_cache: Cache, clock: FakeClock) -> None:
    memory_cache.set("k", "v", ttl=10)
    clock.advance(9.9)
    assert memory_cache.get("k") == "v"
    clock.advance(0.1)
    assert memory_cache.get("k") is None


def test_memory_cache_entry_expires_after_the_default_ttl(
    memory_cache: Cache, clock: FakeClock
) -> None:
    memory_cache.set("k", "v")
    clock.advance(59)
    assert memory_cache.get("k") == "v"
    clock.advance(1)
    assert memory_cache.get("k") is None


def test_memory_cache_evicts_the_least_recently_used_beyond_max_entries(
    make_settings: Callable[..., Settings],
) -> None:
    cache = Cache(make_settings(cache={"max_entries": 3}))
    for name in ("a", "b", "c"):
        cache.set(name, name)
    cache.get("a")  # now "b" is the oldest use
    cache.set("d", "d")
    assert [cache.get(name) for name in ("a", "b", "c", "d")] == ["a", None, "c", "d"]


def test_cache_returns_a_fresh_copy_each_time(memory_cache: Cache) -> None:
    memory_cache.set("k", {"items": [1]})
    memory_cache.get("k")["items"].append(2)
    assert memory_cache.get("k") == {"items": [1]}


def test_cache_rejects_a_value_that_is_not_json(memory_cache: Cache) -> None:
    with pytest.raises(InputError, match="value: a set is not JSON-serialisable"):
        memory_cache.set("k", {1, 2})


def test_cache_rejects_a_ttl_that_is_not_positive(memory_cache: Cache) -> None:
    with pytest.raises(InputError, match="ttl: 0 is not a TTL"):
        memory_cache.set("k", 1, ttl=0)


def test_cache_counts_hits_and_misses(memory_cache: Cache) -> None:
    memory_cache.set("k", 1)
    memory_cache.get("k")
    memory_cache.get("absent")
    memory_cache.get("absent")
    stats = memory_cache.stats()
    assert (stats.hits, stats.misses) == (1, 2)


# -- namespacing --------------------------------------------------------------------------------


def test_caches_with_different_prefixes_do_not_see_each_other(
    make_redis_cache: Callable[..., Cache], redis_prefix: str
) -> None:
    ours, theirs = make_redis_cache(), make_redis_cache(prefix=f"{redis_prefix}:other")
    ours.set("k", "ours")
    assert theirs.get("k") is None
    theirs.set("k", "theirs")
    assert ours.get("k") == "ours"


def test_clear_removes_only_its_own_namespace(
    make_redis_cache: Callable[..., Cache], raw_redis: redis_lib.Redis, redis_prefix: str
) -> None:
    ours, theirs = make_redis_cache(), make_redis_cache(prefix=f"{redis_prefix}:other")
    for index in range(1200):  # more than one SCAN page and one UNLINK batch
        ours.set(f"k{index}", index)
    theirs.set("k0", "theirs")
    raw_redis.set(f"{redis_prefix}:events:x", "not the cache's")
    ours.clear()
    assert list(raw_redis.scan_iter(match=f"{redis_prefix}:cache:*")) == []
    assert theirs.get("k0") == "theirs"
    assert raw_redis.get(f"{redis_prefix}:events:x") == b"not the cache's"


# -- circuit breaker ----------------------------------------------------------------------------


def test_cache_falls_back_to_memory_when_redis_dies(
    breaker_cache: Cache, own_redis: OwnRedis
) -> None:
    breaker_cache.set("k", "on redis")
    own_redis.stop()
    breaker_cache.set("k", "on memory")
    assert breaker_cache.get("k") == "on memory"
    assert breaker_cache.backend == "memory"
    assert breaker_cache.stats().breaker_opens == 1


def test_cache_starts_the_memory_fallback_empty(
    make_settings: Callable[..., Settings], own_redis: OwnRedis, clock: FakeClock
) -> None:
    settings = make_settings(redis={"url": own_redis.url, "prefix": "m1t"}, cache={"probe_s": 5})
    cache = Cache(settings, redis_client=make_redis(settings), clock=clock)
    cache.force_backend("memory")
    cache.set("written before the outage", 1)
    cache.force_backend(None)
    cache.get("x")  # the breaker drains and closes: back on Redis, memory forgotten
    own_redis.stop()
    assert cache.get("written before the outage") is None
    assert cache.backend == "memory"


def test_cache_skips_redis_while_the_breaker_is_open(
    make_settings: Callable[..., Settings], own_redis: OwnRedis, clock: FakeClock
) -> None:
    settings = make_settings(redis={"url": own_redis.url, "prefix": "m1t"}, cache={"probe_s": 5})
    client = CountingRedis.on(own_redis.url)
    cache = Cache(settings, redis_client=client, clock=clock)
    go_down(cache, own_redis)
    sent = len(client.commands)
    for index in range(20):
        cache.set(f"k{index}", index)
        cache.get(f"k{index}")
    clock.advance(PROBE_S - 0.1)
    cache.get("k0")
    assert len(client.commands) == sent


def test_cache_probes_redis_once_per_probe_interval(
    make_settings: Callable[..., Settings], own_redis: OwnRedis, clock: FakeClock
) -> None:
    settings = make_settings(redis={"url": own_redis.url, "prefix": "m1t"}, cache={"probe_s": 5})
    client = CountingRedis.on(own_redis.url)
    cache = Cache(settings, redis_client=client, clock=clock)
    go_down(cache, own_redis)
    client.commands.clear()
    clock.advance(PROBE_S)
    for _ in range(10):
        cache.get("k")
    assert client.commands == ["PING"]
    assert cache.backend == "memory"


def test_cache_returns_to_redis_after_the_probe_interval(
    breaker_cache: Cache, own_redis: OwnRedis, clock: FakeClock
) -> None:
    go_down(breaker_cache, own_redis)
    own_redis.start()
    clock.advance(PROBE_S - 0.1)
    breaker_cache.get("k")
    assert breaker_cache.backend == "memory"
    clock.advance(0.1)
    breaker_cache.get("k")
    assert breaker_cache.backend == "redis"
    assert breaker_cache.stats().breaker_closes == 1


def test_cache_does_not_serve_a_stale_redis_value_after_recovery(
    breaker_cache: Cache,
    own_redis: OwnRedis,
    own_raw: Callable[[], redis_lib.Redis],
    clock: FakeClock,
) -> None:
    breaker_cache.set("k", "v1")
    own_redis.stop()
    breaker_cache.set("k", "v2")
    own_redis.start()
    # The restarted server lost v1; put it back, as a Redis that was only unreachable keeps it.
    own_raw().set("m1t:cache:k", b'"v1"')
    clock.advance(PROBE_S)
    assert breaker_cache.get("k") is None
    assert breaker_cache.backend == "redis"


def test_cache_drops_in_redis_a_key_deleted_during_the_outage(
    breaker_cache: Cache,
    own_redis: OwnRedis,
    own_raw: Callable[[], redis_lib.Redis],
    clock: FakeClock,
) -> None:
    breaker_cache.set("k", "v1")
    own_redis.stop()
    breaker_cache.delete("k")
    own_redis.start()
    own_raw().set("m1t:cache:k", b'"v1"')
    clock.advance(PROBE_S)
    assert breaker_cache.get("k") is None


def test_cache_clears_the_namespace_when_outage_writes_overflow(
    breaker_cache: Cache,
    own_redis: OwnRedis,
    own_raw: Callable[[], redis_lib.Redis],
    clock: FakeClock,
) -> None:
    go_down(breaker_cache, own_redis)
    for index in range(cache_module.DIRTY_KEYS_LIMIT + 1):
        breaker_cache.set(f"k{index}", index)
    own_redis.start()
    raw = own_raw()
    raw.set("m1t:cache:never-written-in-the-outage", b'"old"')
    raw.set("m1t:events:x", b"kept")
    clock.advance(PROBE_S)
    assert breaker_cache.get("never-written-in-the-outage") is None
    assert breaker_cache.backend == "redis"
    assert raw.get("m1t:events:x") == b"kept"


def test_cache_clears_memory_on_recovery(
    breaker_cache: Cache, own_redis: OwnRedis, clock: FakeClock
) -> None:
    go_down(breaker_cache, own_redis)
    breaker_cache.set("k", "on memory")
    own_redis.start()
    clock.advance(PROBE_S)
    assert breaker_cache.get("k") is None
    assert breaker_cache.stats().memory_entries == 0


def test_explicit_probe_returns_to_redis_without_waiting(
    breaker_cache: Cache, own_redis: OwnRedis
) -> None:
    go_down(breaker_cache, own_redis)
    own_redis.start()
    assert breaker_cache.probe() is True
    assert breaker_cache.backend == "redis"


def test_probe_keeps_memory_while_redis_is_still_down(
    breaker_cache: Cache, own_redis: OwnRedis
) -> None:
    go_down(breaker_cache, own_redis)
    breaker_cache.set("k", "on memory")
    assert breaker_cache.probe() is False
    assert breaker_cache.get("k") == "on memory"


def test_breaker_transitions_are_logged_without_values(
    breaker_cache: Cache, own_redis: OwnRedis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="m1.cache")
    own_redis.stop()
    breaker_cache.set("secret-key", "s3cret-value")
    own_redis.start()
    breaker_cache.probe()
    levels = [(record.levelno, record.getMessage()) for record in caplog.records]
    assert any(level == logging.WARNING and "breaker open" in text for level, text in levels)
    assert any(level == logging.INFO and "breaker closed" in text for level, text in levels)
    assert "s3cret-value" not in caplog.text
    assert "secret-key" not in caplog.text


# -- cached_call --------------------------------------------------------------------------------


def run_threads(count: int, target: Callable[[], None]) -> list[threading.Thread]:
    threads = [threading.Thread(target=target, daemon=True) for _ in range(count)]
    for thread in threads:
        thread.start()
    return threads


def test_cached_call_returns_the_cached_value_without_calling(memory_cache: Cache) -> None:
    memory_cache.set("k", "cached")
    assert memory_cache.cached_call("k", lambda: pytest.fail("fn must not run")) == "cached"


def test_cached_call_caches_the_result(memory_cache: Cache) -> None:
    calls: list[int] = []

    def compute() -> dict[str, int]:
        calls.append(1)
        return {"n": 1}

    assert memory_cache.cached_call("k", compute) == {"n": 1}
    assert memory_cache.cached_call("k", compute) == {"n": 1}
    assert len(calls) == 1


def test_cached_call_caches_a_none_result(memory_cache: Cache) -> None:
    calls: list[int] = []
    memory_cache.cached_call("k", lambda: calls.append(1))
    memory_cache.cached_call("k", lambda: calls.append(1))
    assert len(calls) == 1


def test_cached_call_shares_the_result_across_replicas_through_redis(
    make_redis_cache: Callable[..., Cache],
) -> None:
    first, second = make_redis_cache(), make_redis_cache()
    first.cached_call("k", lambda: [1, 2])
    assert second.cached_call("k", lambda: pytest.fail("fn must not run")) == [1, 2]


def test_cached_call_coalesces_concurrent_calls_for_one_key(memory_cache: Cache) -> None:
    release = threading.Event()
    calls: list[int] = []
    results: list[Any] = []

    def compute() -> str:
        calls.append(1)
        release.wait(10)
        return "value"

    threads = run_threads(20, lambda: results.append(memory_cache.cached_call("k", compute)))
    # every thread looked and missed
    wait_for(memory_cache.stats, "20 misses", until=lambda stats: stats.misses == 20)
    release.set()
    for thread in threads:
        thread.join(10)
    assert len(calls) == 1
    assert results == ["value"] * 20


def test_cached_call_hands_the_exception_to_every_waiter(memory_cache: Cache) -> None:
    release = threading.Event()
    calls: list[int] = []
    errors: list[BaseException] = []

    def compute() -> str:
        calls.append(1)
        release.wait(10)
        raise LookupError("registry down")

    def call() -> None:
        try:
            memory_cache.cached_call("k", compute)
        except LookupError as exc:
            errors.append(exc)

    threads = run_threads(20, call)
    wait_for(memory_cache.stats, "20 misses", until=lambda stats: stats.misses == 20)
    release.set()
    for thread in threads:
        thread.join(10)
    assert len(calls) == 1
    assert len(errors) == 20


def test_cached_call_does_not_cache_an_exception(memory_cache: Cache) -> None:
    def fail() -> str:
        raise LookupError("registry down")

    with pytest.raises(LookupError):
        memory_cache.cached_call("k", fail)
    assert memory_cache.cached_call("k", lambda: "recovered") == "recovered"


def test_cached_call_does_not_coalesce_different_keys(memory_cache: Cache) -> None:
    release = threading.Event()
    entered: list[str] = []

    def compute_for(key: str) -> Callable[[], str]:
        def compute() -> str:
            entered.append(key)
            release.wait(10)
            return key

        return compute

    threads = [
        threading.Thread(target=memory_cache.cached_call, args=(key, compute_for(key)), daemon=True)
        for key in ("a", "b")
    ]
    for thread in threads:
        thread.start()
    try:
        # both run at once: neither waits for the other
        wait_for(lambda: list(entered), "both callers inside", until=lambda e: len(e) == 2)
    finally:
        release.set()
        for thread in threads:
            thread.join(10)
    assert sorted(entered) == ["a", "b"]


# -- force_backend ------------------------------------------------------------------------------


def test_force_backend_memory_keeps_calls_off_redis(
    make_settings: Callable[..., Settings], shared_redis_url: str, redis_prefix: str
) -> None:
    settings = make_settings(redis={"url": shared_redis_url, "prefix": redis_prefix})
    client = CountingRedis.on(shared_redis_url)
    cache = Cache(settings, redis_client=client)
    cache.force_backend("memory")
    cache.set("k", "v")
    assert cache.get("k") == "v"
    assert client.commands == []
    assert (cache.backend, cache.stats().forced) == ("memory", "memory")
    client.close()


def test_force_backend_automatic_returns_to_redis_without_stale_values(
    make_redis_cache: Callable[..., Cache], raw_redis: redis_lib.Redis, redis_prefix: str
) -> None:
    cache = make_redis_cache()
    cache.set("k", "v1")
    cache.force_backend("memory")
    cache.set("k", "v2")
    cache.force_backend(None)
    assert cache.get("k") is None
    assert cache.backend == "redis"
    assert raw_redis.exists(f"{redis_prefix}:cache:k") == 0


def test_force_backend_redis_drops_stale_values_before_switching(
    make_redis_cache: Callable[..., Cache], raw_redis: redis_lib.Redis, redis_prefix: str
) -> None:
    cache = make_redis_cache()
    cache.set("k", "v1")
    cache.force_backend("memory")
    cache.delete("k")
    cache.force_backend("redis")
    assert cache.backend == "redis"
    assert raw_redis.exists(f"{redis_prefix}:cache:k") == 0


def test_force_backend_redis_raises_when_redis_fails(
    breaker_cache: Cache, own_redis: OwnRedis
) -> None:
    breaker_cache.force_backend("redis")
    own_redis.stop()
    with pytest.raises(UnavailableError, match="pinned to redis"):
        breaker_cache.get("k")
    assert breaker_cache.backend == "redis"


def test_force_backend_redis_without_a_redis_url_is_rejected(memory_cache: Cache) -> None:
    with pytest.raises(InputError, match="redis is not configured"):
        memory_cache.force_backend("redis")


def test_force_backend_rejects_an_unknown_backend(memory_cache: Cache) -> None:
    with pytest.raises(InputError, match="'disk' is not a cache backend"):
        memory_cache.force_backend("disk")  # type: ignore[arg-type]


# -- accounting, relieve and reset_pool (the self-heal commands) --------------------------------


def test_memory_bytes_follow_sets_replacements_deletes_and_evictions(
    make_settings: Callable[..., Settings], clock: FakeClock
) -> None:
    cache = Cache(make_settings(cache={"max_entries": 2}), clock=clock)
    cache.set("a", "x" * 10)  # key 1 byte, value '"xxxxxxxxxx"' 12 bytes
    assert cache.stats().memory_bytes == 13
    cache.set("a", "y")  # replaced: 1 + 3
    assert cache.stats().memory_bytes == 4
    cache.set("bb", [1, 2])  # 2 + 5
    assert cache.stats().memory_bytes == 11
    cache.set("c", 7)  # evicts "a": 7 + 2
    assert cache.stats().memory_bytes == 9
    cache.delete("bb")
    assert cache.stats().memory_bytes == 2
    clock.advance(10_000)
    assert cache.get("c") is None  # expired on read: its bytes go too
    assert cache.stats().memory_bytes == 0


def test_relieve_frees_the_memory_fallback_and_reports_the_bytes(memory_cache: Cache) -> None:
    for index in range(50):
        memory_cache.set(f"k{index}", "v" * 100)
    held = memory_cache.stats().memory_bytes
    assert held > 5000
    assert memory_cache.relieve() == (50, held)
    assert (memory_cache.stats().memory_entries, memory_cache.stats().memory_bytes) == (0, 0)
    assert memory_cache.relieve() == (0, 0)


def test_relieve_on_memory_still_drops_outage_writes_in_redis_on_recovery(
    breaker_cache: Cache, own_redis: OwnRedis, own_raw: Callable[[], redis_lib.Redis]
) -> None:
    breaker_cache.set("k", "old")
    go_down(breaker_cache, own_redis)
    breaker_cache.set("k", "new")  # on memory: "k" is now stale in Redis (were it alive)
    breaker_cache.relieve()
    own_redis.start()  # the same port, empty; put the stale value back as if it survived
    own_raw().set("m1t:cache:k", b'"old"')
    assert breaker_cache.probe() is True
    assert breaker_cache.get("k") is None  # the stale value was deleted, not served


def test_reset_pool_closes_connections_and_moves_back_to_a_redis_that_returned(
    breaker_cache: Cache, own_redis: OwnRedis
) -> None:
    breaker_cache.set("k", "v")
    go_down(breaker_cache, own_redis)
    breaker_cache.reset_pool()  # Redis still down: stays on memory, no error
    assert breaker_cache.backend == "memory"
    own_redis.start()
    breaker_cache.reset_pool()  # probes at once, whatever the probe interval
    assert breaker_cache.stats().backend == "redis"
    assert breaker_cache.stats().breaker_closes == 1


def test_ping_asks_redis_whatever_the_breaker_says(
    breaker_cache: Cache, own_redis: OwnRedis
) -> None:
    """A closed breaker only means no call failed yet: the pool-reset command reports the PING."""
    assert breaker_cache.ping() is None
    own_redis.stop()
    assert breaker_cache.backend == "redis"  # no call has failed: the breaker is still closed
    assert breaker_cache.ping() == "ConnectionError"
    own_redis.start()
    assert breaker_cache.ping() is None
