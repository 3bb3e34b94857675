"""Rate limits per credential and per address, shared across replicas through Redis."""

from __future__ import annotations

from collections.abc import Callable

import redis
from fastapi.testclient import TestClient

from m1lib.ratelimit import RateLimiter
from m1lib.settings import Settings
from tests.m1lib.api.conftest import Keys, bearer


class _Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_two_replicas_share_one_limit_through_redis(
    make_settings: Callable[..., Settings], shared_redis_url: str, redis_prefix: str
) -> None:
    settings = make_settings(redis={"url": shared_redis_url, "prefix": redis_prefix})
    clock = _Clock(6_000_000.0)  # the start of a window
    replicas = [
        RateLimiter(settings, redis_client=redis.Redis.from_url(shared_redis_url), clock=clock)
        for _ in range(2)
    ]
    verdicts = [replicas[i % 2].hit("read:cred:ops", 6).allowed for i in range(8)]
    assert verdicts == [True] * 6 + [False] * 2
    assert replicas[0].backend == "redis"


def test_alone_in_memory_the_limit_holds_per_replica(
    make_settings: Callable[..., Settings],
) -> None:
    clock = _Clock(6_000_000.0)
    limiter = RateLimiter(make_settings(), redis_client=None, clock=clock)
    assert [limiter.hit("b", 3).allowed for _ in range(4)] == [True, True, True, False]
    assert limiter.backend == "memory"


def test_the_window_slides(make_settings: Callable[..., Settings]) -> None:
    clock = _Clock(6_000_000.0)
    limiter = RateLimiter(make_settings(), redis_client=None, clock=clock)
    for _ in range(4):
        limiter.hit("b", 4)
    refused = limiter.hit("b", 4)
    assert not refused.allowed
    assert 1 <= refused.retry_after_s <= 61
    clock.now += 60 + 45  # three quarters of the old window have slid out
    assert limiter.hit("b", 4).allowed


def test_redis_failure_falls_back_to_memory(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(redis={"url": "redis://127.0.0.1:1/0", "timeout_s": 0.2})
    limiter = RateLimiter(
        settings, redis_client=redis.Redis.from_url("redis://127.0.0.1:1/0", socket_timeout=0.2)
    )
    assert limiter.hit("b", 2).allowed
    assert limiter.backend == "memory"


def test_http_429_with_retry_after(make_client: Callable[..., TestClient]) -> None:
    from m1lib import auth

    client = make_client(ratelimit={"read_per_min": 3})
    db = client.app.state.runtime.db  # type: ignore[attr-defined]
    key = auth.create_credential(db, "reader", "viewer", created_by="test")
    codes = [client.get("/api/m1/replicas", headers=bearer(key)).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    response = client.get("/api/m1/replicas", headers=bearer(key))
    assert int(response.headers["retry-after"]) >= 1
    assert response.headers["content-type"].startswith("application/problem+json")
    assert "3 read requests per minute" in response.json()["detail"]


def test_failed_authentications_are_limited_per_address(
    keyed_client: tuple[TestClient, Keys],
) -> None:
    client, _ = keyed_client
    codes = [
        client.get("/api/m1/replicas", headers=bearer(f"m1_wrong{i}")).status_code
        for i in range(12)
    ]
    assert codes[:10] == [401] * 10
    assert codes[10:] == [429, 429]
