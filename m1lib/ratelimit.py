"""Rate limits shared by every replica through Redis, per credential and per client address.

A sliding-window counter: the current minute's count plus the previous minute's, weighted by how
much of it still overlaps the window. One pipelined round trip per check. When Redis is absent or
failing, each replica counts alone in memory (limits then apply per replica) and goes back to
Redis as soon as it answers again.

Buckets are named ``<class>:addr:<address>`` and ``<class>:cred:<name>``; the classes are ``read``,
``query``, ``admin``, ``login`` and ``ingest`` (event batches), each limited by its own
``M1_RATELIMIT_<CLASS>_PER_MIN`` (``m1lib.api.deps.limit_class`` picks a request's class).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis

from m1lib.redis_conn import key as redis_key
from m1lib.settings import Settings

logger = logging.getLogger("m1.ratelimit")
WINDOW_S = 60
_RETRY_REDIS_S = 5.0


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    retry_after_s: int
    count: float
    limit: int


class RateLimiter:
    """``hit(bucket, limit)`` counts one request in ``bucket`` and says whether it may proceed."""

    def __init__(
        self,
        settings: Settings,
        *,
        redis_client: redis.Redis | None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._redis = redis_client
        self._clock = clock
        self._memory: dict[tuple[str, int], int] = {}
        self._lock = threading.Lock()
        self._redis_down_until = 0.0

    @property
    def redis(self) -> redis.Redis | None:
        """Its Redis client (the control channel's cache.reset_pool resets its pool)."""
        return self._redis

    @property
    def backend(self) -> str:
        if self._redis is None or self._clock() < self._redis_down_until:
            return "memory"
        return "redis"

    def hit(self, bucket: str, limit: int) -> Verdict:
        now = self._clock()
        window = int(now // WINDOW_S)
        elapsed = now - window * WINDOW_S
        counts = self._counts_redis(bucket, window) if self.backend == "redis" else None
        if counts is None:
            counts = self._counts_memory(bucket, window)
        current, previous = counts
        weighted = previous * (WINDOW_S - elapsed) / WINDOW_S + current
        if weighted <= limit:
            return Verdict(True, 0, weighted, limit)
        # Wait until the previous window's weight has decayed enough for one more request.
        excess = weighted - limit
        retry = WINDOW_S - elapsed if previous == 0 else excess * WINDOW_S / previous
        return Verdict(
            False, max(1, math.ceil(min(retry, WINDOW_S - elapsed + 1))), weighted, limit
        )

    def _counts_redis(self, bucket: str, window: int) -> tuple[int, int] | None:
        assert self._redis is not None
        current_key = redis_key(self._settings, "rl", bucket, str(window))
        previous_key = redis_key(self._settings, "rl", bucket, str(window - 1))
        try:
            pipe = self._redis.pipeline(transaction=False)
            pipe.incr(current_key)
            pipe.expire(current_key, WINDOW_S * 2 + 5)
            pipe.get(previous_key)
            current, _, previous = pipe.execute()
        except redis.RedisError as error:
            self._redis_down_until = self._clock() + _RETRY_REDIS_S
            logger.warning(
                "rate limits counted in memory for now: Redis failed (%s)", type(error).__name__
            )
            return None
        return int(current), int(previous or 0)

    def _counts_memory(self, bucket: str, window: int) -> tuple[int, int]:
        with self._lock:
            current = self._memory.get((bucket, window), 0) + 1
            self._memory[(bucket, window)] = current
            previous = self._memory.get((bucket, window - 1), 0)
            if len(self._memory) > 100_000:  # drop windows that can no longer matter
                self._memory = {k: v for k, v in self._memory.items() if k[1] >= window - 1}
            return current, previous
