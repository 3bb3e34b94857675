"""Redis clients and key names: one place decides timeouts and the deployment's namespace.

Every key and channel M1 uses is ``<M1_REDIS_PREFIX>:<part>:...``, so several deployments (and test
runs) share one Redis without seeing each other.
"""

from __future__ import annotations

import redis

from m1lib.settings import Settings


def make_redis(settings: Settings) -> redis.Redis | None:
    """A client for the configured Redis, or None when M1 runs without one. Connects lazily."""
    url = settings.redis_url
    if url is None:
        return None
    return redis.Redis.from_url(
        url,
        socket_timeout=settings.redis.timeout_s,
        socket_connect_timeout=settings.redis.timeout_s,
        health_check_interval=30,
        decode_responses=False,
    )


def make_pubsub_redis(settings: Settings) -> redis.Redis | None:
    """A client for a blocking subscriber: no read timeout, since silence is normal on a channel."""
    url = settings.redis_url
    if url is None:
        return None
    return redis.Redis.from_url(
        url,
        socket_connect_timeout=settings.redis.timeout_s,
        socket_keepalive=True,
        health_check_interval=10,
    )


def key(settings: Settings, *parts: str) -> str:
    return ":".join((settings.redis.prefix, *parts))
