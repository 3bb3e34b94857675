"""The replica's control commands the self-heal flow issues, applied as a replica applies them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from m1lib.api.replica import ReplicaRuntime
from m1lib.revocation import RevocationManager
from m1lib.settings import Settings
from tests.services import OwnRedis


def runtime_of(client: TestClient) -> ReplicaRuntime:
    runtime: ReplicaRuntime = client.app.state.runtime  # type: ignore[attr-defined]
    return runtime


def apply(runtime: ReplicaRuntime, name: str, **args: object) -> str:
    ok, detail = runtime.registry.apply(name, args)
    assert ok, detail
    return detail


def test_every_self_heal_command_is_registered(make_client: Callable[..., TestClient]) -> None:
    names = runtime_of(make_client(jwt={"secret": "s" * 40})).registry.names()
    for name in (
        "cache.reset_pool",
        "cache.set_backend",
        "policy.reload",
        "memory.relieve",
        "revocation.resync",
        "metrics.resync",
    ):
        assert name in names


def test_memory_relieve_frees_the_bytes_the_cache_held(
    make_client: Callable[..., TestClient],
) -> None:
    runtime = runtime_of(make_client())
    for index in range(200):
        runtime.cache.set(f"k{index}", "v" * 500)
    held = runtime.cache.stats().memory_bytes
    assert held > 100_000
    detail = apply(runtime, "memory.relieve")
    assert detail.startswith(f"freed {held} bytes of cache (200 entries)")
    assert "gc collected" in detail
    assert "purged revocations dropped" in detail
    assert runtime.cache.stats().memory_bytes == 0


def test_revocation_resync_reloads_what_another_process_revoked(
    make_client: Callable[..., TestClient],
) -> None:
    runtime = runtime_of(make_client())
    other = RevocationManager(settings=runtime.settings, db=runtime.db, publisher=None)
    other.revoke_token("jti-elsewhere", "test", "someone")
    other.close()
    assert not runtime.revocations.is_revoked("jti-elsewhere")  # no pub/sub, no thread here
    detail = apply(runtime, "revocation.resync")
    assert detail.startswith("revocations fully reloaded: 1 added, 0 dropped")
    assert runtime.revocations.is_revoked("jti-elsewhere")


def test_policy_reload_reads_the_operator_tools_file_again(
    make_client: Callable[..., TestClient], tmp_path: Path
) -> None:
    tools = tmp_path / "tools.toml"
    tools.write_text('[tools.first_tool]\nscope = "read"\n')
    runtime = runtime_of(make_client(jwt={"secret": "s" * 40}, policy={"tools_file": tools}))
    assert runtime.policy is not None
    assert "first_tool" in runtime.policy.tools
    tools.write_text('[tools.second_tool]\nscope = "write"\n')
    detail = apply(runtime, "policy.reload")
    assert "changed: first_tool, second_tool" in detail
    assert "second_tool" in runtime.policy.tools
    assert "first_tool" not in runtime.policy.tools
    tools.write_text("[tools.broken]\nscope = 'root'\n")
    ok, detail = runtime.registry.apply("policy.reload", {})
    assert not ok
    assert "broken" in detail
    assert "second_tool" in runtime.policy.tools


def test_policy_reload_without_a_signing_key_says_so(
    make_client: Callable[..., TestClient],
) -> None:
    assert "no policy engine" in apply(runtime_of(make_client()), "policy.reload")


def test_cache_commands_fall_back_to_memory_and_back_on_a_redis_killed_and_restarted(
    make_client: Callable[..., TestClient], own_redis: OwnRedis
) -> None:
    runtime = runtime_of(make_client(redis={"url": own_redis.url, "prefix": "m1cmd"}))
    runtime.cache.set("k", "v")
    own_redis.stop()
    assert "cache backend now" in apply(runtime, "cache.reset_pool")
    assert apply(runtime, "cache.set_backend", backend="memory") == "cache backend now memory"
    runtime.cache.set("k", "outage")  # the replica keeps working on memory
    assert runtime.cache.get("k") == "outage"
    own_redis.start()
    detail = apply(runtime, "cache.set_backend", backend=None)  # automatic: probes now
    assert detail == "cache backend now redis"
    assert runtime.cache.get("k") is None  # the outage write was dropped in Redis, not served


def test_metrics_resync_without_a_stream_says_there_is_nothing_to_do(
    make_client: Callable[..., TestClient],
) -> None:
    assert "nothing to resync" in apply(runtime_of(make_client()), "metrics.resync")


def test_metrics_resync_restarts_a_stopped_consumer_and_catches_up(
    make_settings: Callable[..., Settings], shared_redis_url: str, redis_prefix: str
) -> None:
    settings = make_settings(redis={"url": shared_redis_url, "prefix": redis_prefix})
    runtime = ReplicaRuntime.from_settings(settings)
    try:
        runtime.metrics.start()
        consumer = runtime.metrics.consumer
        assert consumer is not None
        consumer.close()  # the consumer thread is gone: the replica falls behind the stream
        detail = apply(runtime, "metrics.resync", timeout_s=10)
        assert "caught up" in detail
        assert "consumer restarted" in detail
        assert consumer.running
        with pytest.raises(AssertionError, match="timeout_s"):
            apply(runtime, "metrics.resync", timeout_s=0)
    finally:
        runtime.close()
