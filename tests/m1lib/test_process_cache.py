"""m1lib.cached_call: the process's cache, built from settings on first use, per tool, recording
cache_operations (gets with hit or miss, sets, evicts) into the default metrics runtime, on real
Redis and on the memory fallback."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import m1lib
from m1lib import process_cache
from m1lib.cache import Cache
from m1lib.errors import InputError
from m1lib.metrics import MetricsRuntime, install_default
from m1lib.settings import Settings, get_settings
from tests.waiting import wait_for

Counts = dict[tuple[str, str | None, str, bool], int]


@pytest.fixture
def configure(
    tmp_data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., Cache]]:
    """``configure(**M1_ variables)``: settings from the environment, and the process cache built
    from them on first use (as in a service); reset and closed after."""

    def factory(**variables: str) -> Cache:
        monkeypatch.setenv("M1_DATA_DIR", str(tmp_data_dir))
        for name, value in variables.items():
            monkeypatch.setenv(f"M1_{name}", value)
        get_settings.cache_clear()
        process_cache.install_cache(None)
        return process_cache.default_cache()

    yield factory
    built = process_cache.install_cache(None)
    if built is not None:
        built.close()
    get_settings.cache_clear()


def counts(metrics: MetricsRuntime) -> Counts:
    assert metrics.flush()
    query = {"metric": "cache_operations", "timeRange": "1h",
             "groupBy": ["cache", "toolName", "op", "hit"], "aggregations": ["count"]}  # fmt: skip
    rows = metrics.run_query(query).rows
    return {(r["cache"], r["toolName"], r["op"], r["hit"]): r["count"] for r in rows}


class Calls:
    """A loader that counts its calls and returns a JSON value naming the call."""

    def __init__(self, value: Any) -> None:
        self.value = value
        self.calls = 0

    def __call__(self) -> Any:
        self.calls += 1
        return self.value


def exercise() -> tuple[Calls, Calls]:
    """Two tools, one key each way: what every backend must count the same."""
    search, other = Calls({"hits": [1, 2]}), Calls(["x"])
    assert m1lib.cached_call("web_search", "q1", search) == {"hits": [1, 2]}
    assert m1lib.cached_call("web_search", "q1", search) == {"hits": [1, 2]}
    assert m1lib.cached_call("web_search", "q1", search, ttl=30) == {"hits": [1, 2]}
    assert m1lib.cached_call("web_search", "q2", search) == {"hits": [1, 2]}
    assert m1lib.cached_call("tool_b", "q1", other) == ["x"]  # the same key, another tool
    return search, other


def expected(backend: str) -> Counts:
    return {
        (backend, "tool_b", "get", False): 1,
        (backend, "tool_b", "set", False): 1,
        (backend, "web_search", "get", False): 2,
        (backend, "web_search", "get", True): 2,
        (backend, "web_search", "set", False): 2,
    }


def test_counted_on_the_memory_fallback(
    configure: Callable[..., Cache], metrics: MetricsRuntime
) -> None:
    cache = configure()  # no M1_REDIS_URL: memory only
    assert cache.backend == "memory"
    search, other = exercise()
    assert (search.calls, other.calls) == (2, 1)
    assert counts(metrics) == expected("memory")
    assert (cache.stats().hits, cache.stats().misses) == (2, 3)


@pytest.mark.redis
def test_counted_on_redis_and_kept_per_tool_under_the_prefix(
    configure: Callable[..., Cache],
    metrics: MetricsRuntime,
    shared_redis_url: str,
    redis_prefix: str,
) -> None:
    cache = configure(REDIS_URL=shared_redis_url, REDIS_PREFIX=redis_prefix)
    assert cache.backend == "redis"
    search, other = exercise()
    assert (search.calls, other.calls) == (2, 1)
    assert counts(metrics) == expected("redis")
    import redis as redis_lib

    client = redis_lib.Redis.from_url(shared_redis_url)
    try:
        keys = sorted(k.decode() for k in client.scan_iter(match=f"{redis_prefix}:cache:*"))
    finally:
        client.close()
    assert keys == [
        f"{redis_prefix}:cache:tool:10:web_search:q1",
        f"{redis_prefix}:cache:tool:10:web_search:q2",
        f"{redis_prefix}:cache:tool:6:tool_b:q1",
    ]


@pytest.mark.redis
def test_a_redis_cache_on_its_memory_fallback_records_memory(
    configure: Callable[..., Cache],
    metrics: MetricsRuntime,
    shared_redis_url: str,
    redis_prefix: str,
) -> None:
    cache = configure(REDIS_URL=shared_redis_url, REDIS_PREFIX=redis_prefix)
    cache.force_backend("memory")  # as the breaker does when Redis fails
    exercise()
    assert counts(metrics) == expected("memory")


def test_concurrent_misses_share_one_call_and_one_set(
    configure: Callable[..., Cache], metrics: MetricsRuntime
) -> None:
    cache = configure()
    release = threading.Event()
    calls = Calls("slow")

    def slow() -> str:
        release.wait(60)
        return str(calls())

    results: list[str] = []
    threads = [
        threading.Thread(target=lambda: results.append(m1lib.cached_call("t", "k", slow)))
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    wait_for(lambda: cache.stats().misses, "8 lookups", until=lambda misses: misses == 8)
    release.set()
    for thread in threads:
        thread.join(60)
    assert (results, calls.calls) == (["slow"] * 8, 1)
    assert counts(metrics) == {("memory", "t", "get", False): 8, ("memory", "t", "set", False): 1}


def test_the_memory_fallback_records_what_it_evicts_with_its_tool(
    make_settings: Callable[..., Settings],
) -> None:
    events: list[tuple[str, tuple[Any, ...]]] = []
    cache = Cache(
        make_settings(cache={"max_entries": 2}), recorder=lambda m, v: events.append((m, v))
    )
    for tool in ("a", "b", "c"):
        cache.cached_call(f"key-{tool}", lambda: 1, tool_name=tool)
    ops = [(values[1], values[2]) for metric, values in events if metric == "cache_operations"]
    assert ops == [("a", "get"), ("a", "set"), ("b", "get"), ("b", "set"),
                   ("c", "get"), ("c", "set"), ("a", "evict")]  # fmt: skip
    assert {len(values) for _, values in events} == {5}  # cache, toolName, op, hit, latencyMs
    latencies = [values[4] for _, values in events]
    assert all(isinstance(ms, float) and ms >= 0 for ms in latencies)


def test_a_cache_without_a_recorder_records_nothing(
    make_settings: Callable[..., Settings], metrics: MetricsRuntime
) -> None:
    cache = Cache(make_settings())
    cache.cached_call("k", lambda: 1, tool_name="t")
    assert counts(metrics) == {}


@pytest.mark.parametrize(
    ("tool", "key", "path"),
    [("", "k", "tool_name"), ("  ", "k", "tool_name"), ("a\x00b", "k", "tool_name"),
     ("t" * 129, "k", "tool_name"), (7, "k", "tool_name"), ("t", "", "key"), ("t", 3, "key")],
)  # fmt: skip
def test_a_bad_tool_name_or_key_is_an_input_error_naming_it(
    configure: Callable[..., Cache], tool: Any, key: Any, path: str
) -> None:
    configure()
    with pytest.raises(InputError) as caught:
        m1lib.cached_call(tool, key, lambda: 1)
    assert caught.value.path == path


def test_the_default_cache_follows_the_installed_metrics_runtime(
    configure: Callable[..., Cache], make_settings: Callable[..., Settings]
) -> None:
    """The cache is built once; its events go to whichever runtime is the default at the call."""
    configure()
    first = MetricsRuntime(make_settings(), replica_id="one")
    second = MetricsRuntime(make_settings(), replica_id="two")
    try:
        for runtime, key in ((first, "k1"), (second, "k2")):
            previous = install_default(runtime)
            try:
                m1lib.cached_call("t", key, lambda: 1)
            finally:
                install_default(previous)
        for runtime in (first, second):
            runtime.recorder.ingest_pending()
            rows = runtime.run_query(
                {"metric": "cache_operations", "timeRange": "1h", "groupBy": ["op"]}
            ).rows
            assert rows == [{"op": "get", "count": 1}, {"op": "set", "count": 1}]
    finally:
        first.close()
        second.close()
