"""Redis (5 scenarios): ping, set/get/expire, pub/sub round trip, latency, eviction policy.

Probe keys and the probe channel live under ``<prefix>:validation:``; keys carry a short expiry
and are deleted at once, so nothing stays. Without Redis, ``local`` passes with a note (M1 falls
back to memory), staging warns and production fails.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Final

import redis
from redis.client import PubSub

from m1lib.ops.validation.scenario import Context, Outcome, Scenario, Status, percentile, timed_ms
from m1lib.ops.validation.target import Profile

__all__ = ["SCENARIOS"]

_PROBE_TTL_MS: Final = 5000


def _without_redis(context: Context) -> Outcome | None:
    if context.redis_url is not None:
        return None
    status = {
        Profile.LOCAL: Status.PASS,
        Profile.STAGING: Status.WARN,
        Profile.PRODUCTION: Status.FAIL,
    }[context.target.profile]
    return Outcome(
        status,
        "no Redis configured",
        "Redis in staging and production",
        "M1 runs with its memory cache and one replica alone",
    )


def _needs_redis(check: Callable[[Context], Outcome]) -> Callable[[Context], Outcome]:
    def run(context: Context) -> Outcome:
        return _without_redis(context) or check(context)

    return run


def ping(context: Context) -> Outcome:
    ms = timed_ms(context.redis.ping)
    return Outcome(Status.PASS, f"PONG in {ms:.1f} ms", "answers PING")


def set_get_expire(context: Context) -> Outcome:
    key = context.probe_key(f"probe:{uuid.uuid4().hex}")
    value = uuid.uuid4().hex.encode()
    client = context.redis
    try:
        client.set(key, value, px=_PROBE_TTL_MS)
        read = client.get(key)
        ttl = int(client.pttl(key))
    finally:
        client.delete(key)
    threshold = f"reads it back, expiry 0-{_PROBE_TTL_MS} ms"
    if read != value:
        return Outcome(Status.FAIL, "read a different value", threshold)
    if not 0 < ttl <= _PROBE_TTL_MS:
        return Outcome(Status.FAIL, f"ttl {ttl} ms", threshold, "the expiry was not kept")
    return Outcome(Status.PASS, f"read back, ttl {ttl} ms", threshold)


def _next_message(subscriber: PubSub, kind: str, within_s: float) -> bool:
    """Whether a message of ``kind`` (subscribe, message) arrives within ``within_s``."""
    deadline = time.perf_counter() + within_s
    while time.perf_counter() < deadline:
        message = subscriber.get_message(timeout=0.05)
        if message is not None and message.get("type") == kind:
            return True
    return False


def pubsub(context: Context) -> Outcome:
    """Publish on a subscribed probe channel (after the server confirmed the subscription)."""
    channel = context.probe_key(f"channel:{uuid.uuid4().hex}")
    limit_ms = context.slo.redis.pubsub_ms
    subscriber = context.redis.pubsub()  # type: ignore[no-untyped-call]
    try:
        subscriber.subscribe(channel)
        if not _next_message(subscriber, "subscribe", context.settings.redis.timeout_s):
            return Outcome(Status.FAIL, "no subscription", "subscribes", "SUBSCRIBE not confirmed")
        started = time.perf_counter()
        context.redis.publish(channel, b"probe")
        received = _next_message(subscriber, "message", limit_ms * 4 / 1000.0)
        ms = (time.perf_counter() - started) * 1000.0
    finally:
        subscriber.close()
    if not received:
        return Outcome(
            Status.FAIL, f"nothing in {ms:.0f} ms", f"<= {limit_ms:g} ms", "message not delivered"
        )
    return Outcome.graded(ms, limit_ms, context.slo.warn_at, unit="ms", what="publish to delivery")


def latency(context: Context) -> Outcome:
    slo = context.slo.redis
    client = context.redis
    samples = [timed_ms(client.ping) for _ in range(slo.samples)]
    return Outcome.graded(
        percentile(samples, 95), slo.ping_p95_ms, context.slo.warn_at, unit="ms",
        what=f"p95 of {len(samples)} PING",
    )  # fmt: skip


def eviction(context: Context) -> Outcome:
    """allkeys-* may evict the event stream and rate-limit counters, not only cache entries."""
    threshold = "noeviction or volatile-*"
    try:
        answer: dict[object, object] = dict(context.redis.config_get("maxmemory-policy"))  # type: ignore[arg-type]
    except redis.ResponseError as error:  # managed Redis often refuses CONFIG
        return Outcome(Status.WARN, "unknown", threshold, f"CONFIG GET refused: {error}")
    policy = answer.get("maxmemory-policy") or answer.get(b"maxmemory-policy")
    if isinstance(policy, bytes):
        policy = policy.decode()
    if not policy:
        return Outcome(Status.WARN, "unknown", threshold, "CONFIG GET gave no policy")
    if str(policy).startswith("allkeys-"):
        status = Status.FAIL if context.target.profile is Profile.PRODUCTION else Status.WARN
        return Outcome(
            status, str(policy), threshold, "may evict the event stream and rate-limit counters"
        )
    return Outcome(Status.PASS, str(policy), threshold)


SCENARIOS: Final[list[Scenario]] = [
    Scenario("redis.ping", "redis", "ping", _needs_redis(ping)),
    Scenario("redis.set_get_expire", "redis", "set, get, expire", _needs_redis(set_get_expire)),
    Scenario("redis.pubsub", "redis", "pub/sub round trip", _needs_redis(pubsub)),
    Scenario("redis.latency", "redis", "PING latency p95", _needs_redis(latency)),
    Scenario("redis.eviction", "redis", "eviction policy", _needs_redis(eviction)),
]
