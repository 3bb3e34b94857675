"""The shared cache: Redis when it answers, an in-process LRU when it does not, and `cached_call`.

Values are JSON-serialisable Python objects, stored as JSON text, so every replica (and both
backends) hands back the same thing: a fresh decoded copy, never an object another thread holds.

Each replica protects itself with a circuit breaker. A Redis error opens it: that call and the
later ones use memory without touching Redis, and a PING at most every ``M1_CACHE_PROBE_S``
closes it again. Nothing read from either side may be staler than what this replica wrote, so:

- on opening, the memory fallback starts empty (it never saw Redis's writes);
- on closing, the keys this replica set or deleted on memory are deleted in Redis first (Redis may
  still hold older values for them), or the whole namespace if there were too many to remember;
  then memory is emptied.

``force_backend`` pins either backend for the control channel's "switch cache backend" command.
The hot path emits nothing but the Redis call; values are never logged (they may be secrets).

Given a ``recorder`` (``Recorder.record_trusted`` of a metrics runtime), every get, set and evict
records a ``cache_operations`` event: ``cache`` is the backend that served it, ``toolName`` the
tool of a `cached_call` (else null), ``hit`` true only for a get that found the key, ``latencyMs``
the call's time (0 for an evict, which happens inside a set). Evicts are entries the memory
fallback drops to stay within ``M1_CACHE_MAX_ENTRIES``; Redis evicts on its own, unseen. Recording
is one queue append on the caller's thread: no I/O, never blocking.

A TTL policy (:meth:`Cache.set_ttl_policy`, fed by :mod:`m1lib.ops.cost.policy_refresh`) gives a
`cached_call` without ``ttl`` its tool's TTL from an in-memory snapshot (no I/O). Such entries
carry a small header (when stored, fresh until, a 64-bit fingerprint of the value, wall-clock
times so every replica reads them alike) and outlive their TTL by a short grace, so a refetch can
tell whether the value changed and how old it was (:meth:`Cache.set_fetch_observer`); past their
TTL they read as a miss. With ``stale_s`` the rule allows stale-while-revalidate: an expired
entry is served for up to ``stale_s`` more while one background refresh (coalesced with the
flights of concurrent misses) replaces it.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, TypeVar, cast

import redis

from m1lib.errors import InputError, UnavailableError
from m1lib.redis_conn import key as redis_key
from m1lib.redis_conn import make_redis

if TYPE_CHECKING:
    from m1lib.settings import Settings

logger = logging.getLogger("m1.cache")

Backend = Literal["redis", "memory"]
EventSink = Callable[[str, tuple[Any, ...]], None]
"""Where a cache records its ``cache_operations`` events: ``Recorder.record_trusted``."""

DIRTY_KEYS_LIMIT = 10_000
"""Keys written on memory that recovery deletes one by one; past this it clears the namespace."""

_UNLINK_BATCH = 500
OBSERVE_GRACE_MAX_S = 60.0
"""How long at most a policy entry outlives its TTL so a refetch can compare old and new values."""
_HEADER = b"\x1e"  # starts a policy entry's header; no JSON text starts with it
_HEADERS = (_HEADER, _HEADER.decode())  # as Redis answers it: bytes, or text when decoded
_T = TypeVar("_T")
_perf_counter = time.perf_counter


class TtlRule(NamedTuple):
    """What the TTL policy says for one tool's `cached_call` entries."""

    ttl_s: float  # how long an entry is fresh
    stale_s: float = 0.0  # how much longer it may be served while one refresh runs (0: never)


TtlPolicy = Callable[[str], TtlRule | None]
"""Tool name -> its rule, or None (the default TTL); called on the hot path: no I/O."""
FetchObserver = Callable[[str, str, float | None, bool | None], None]
"""(tool, key, age_s, changed) of each refetch of a policy entry; None when the old one was gone."""
GetObserver = Callable[[str, str, bool], None]
"""(tool, key, served) of each counted `cached_call` get; on the hot path: no I/O, no blocking."""
FillObserver = Callable[[str, str, int], None]
"""(tool, key, 64-bit fingerprint of the new value) of each `cached_call` fill, any tool."""


class _Meta(NamedTuple):
    stored_ms: int  # wall clock
    fresh_ms: int  # wall clock: fresh before this
    fingerprint: int


class _Old(NamedTuple):
    """A policy entry past its TTL but still stored: servable while stale, compared on refetch."""

    value: Any
    meta: _Meta
    servable: bool  # within the stale-while-revalidate window of the caller's rule


@dataclass(frozen=True)
class CacheStats:
    """Counters since the cache was built, for the heartbeat and the dashboard."""

    hits: int
    misses: int
    breaker_opens: int
    breaker_closes: int
    backend: Backend
    forced: Backend | None
    memory_entries: int
    memory_bytes: int  # keys and encoded values held by the memory fallback


class _Flight:
    """One running `cached_call` that concurrent callers of the same key wait on."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.data: bytes | None = None
        self.error: BaseException | None = None


class _MemoryLRU:
    """Encoded values with absolute expiry and their tool (for evict events), least recently used
    first; the caller holds the lock."""

    def __init__(self, max_entries: int) -> None:
        self._max_entries = max_entries
        self._entries: OrderedDict[str, tuple[bytes, float, str | None]] = OrderedDict()
        self.bytes = 0  # len(key) + len(value) of every entry: what clearing frees, roughly

    def __len__(self) -> int:
        return len(self._entries)

    def _drop(self, key: str, data: bytes) -> None:
        self.bytes -= len(key) + len(data)

    def get(self, key: str, now: float) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        data, expires_at, _ = entry
        if now >= expires_at:
            del self._entries[key]
            self._drop(key, data)
            return None
        self._entries.move_to_end(key)
        return data

    def set(
        self, key: str, data: bytes, expires_at: float, tool: str | None = None
    ) -> list[str | None]:
        """Store one value; returns the tools of the entries evicted to make room."""
        old = self._entries.get(key)
        if old is not None:
            self._drop(key, old[0])
        self._entries[key] = (data, expires_at, tool)
        self.bytes += len(key) + len(data)
        self._entries.move_to_end(key)
        evicted: list[str | None] = []
        while len(self._entries) > self._max_entries:
            gone, (gone_data, _, gone_tool) = self._entries.popitem(last=False)
            self._drop(gone, gone_data)
            evicted.append(gone_tool)
        return evicted

    def delete(self, key: str) -> None:
        old = self._entries.pop(key, None)
        if old is not None:
            self._drop(key, old[0])

    def clear(self) -> int:
        """Drop every entry; returns the bytes they held."""
        freed = self.bytes
        self._entries.clear()
        self.bytes = 0
        return freed


class Cache:
    """A JSON cache on Redis with an in-memory fallback behind a per-replica circuit breaker.

    Use one per process (it is thread-safe) for results worth sharing across replicas, such as
    tool registry lookups. Without a Redis client it is a bounded in-process LRU. Services use the
    process's own through ``m1lib.cached_call`` (:mod:`m1lib.process_cache`).

        cache = Cache.from_settings(settings)
        tools = cache.cached_call("tools:v1", load_tools, ttl=60)
    """

    def __init__(
        self,
        settings: Settings,
        *,
        redis_client: redis.Redis | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        recorder: EventSink | None = None,
    ) -> None:
        self._settings = settings
        self._client = redis_client
        self._clock = clock
        self._wall = wall_clock  # policy entries' times: shared by every process
        self._ttl_policy: TtlPolicy | None = None
        self._fetch_observer: FetchObserver | None = None
        self._get_observer: GetObserver | None = None
        self._fill_observer: FillObserver | None = None
        self._recorder = recorder  # None: records no cache_operations
        self._default_ttl_s = settings.cache.default_ttl_s
        self._probe_s = settings.cache.probe_s
        self._owns_client = False
        # One lock for the memory store, breaker state and counters; Redis I/O never runs under it.
        self._lock = threading.Lock()
        # Serialises probes and backend switches, so one drain of stale keys runs at a time.
        self._switch_lock = threading.Lock()
        self._memory = _MemoryLRU(settings.cache.max_entries)
        self._breaker_open = False
        self._next_probe = 0.0
        self._forced: Backend | None = None
        self._dirty: set[str] = set()
        self._wipe_namespace = False
        self._hits = 0
        self._misses = 0
        self._opens = 0
        self._closes = 0
        self._flights: dict[str, _Flight] = {}
        self._flights_lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings, *, recorder: EventSink | None = None) -> Cache:
        """The cache on the configured Redis (memory only without ``M1_REDIS_URL``)."""
        cache = cls(settings, redis_client=make_redis(settings), recorder=recorder)
        cache._owns_client = True
        return cache

    def close(self) -> None:
        """Close the Redis client if this cache created it (`from_settings`)."""
        if self._owns_client and self._client is not None:
            self._client.close()

    # -- the public calls -----------------------------------------------------------------------

    @property
    def backend(self) -> Backend:
        """Where calls go right now."""
        with self._lock:
            return "memory" if self._active_client_locked() is None else "redis"

    def get(self, key: str) -> Any:
        """The cached value, or None when absent or expired (a stored JSON null reads the same)."""
        return self._lookup(key)[1]

    def set_ttl_policy(self, policy: TtlPolicy | None) -> None:
        """Use ``policy`` for `cached_call`s given a tool and no ``ttl`` (None: the default TTL)."""
        self._ttl_policy = policy

    def set_fetch_observer(self, observer: FetchObserver | None) -> None:
        """Call ``observer`` after each refetch of a policy entry (on the refetching thread)."""
        self._fetch_observer = observer

    def set_get_observer(self, observer: GetObserver | None) -> None:
        """Call ``observer(tool, key, served)`` on every counted get of a `cached_call` with a tool
        (the TTL optimiser's request counts); it runs on the caller's thread, so it must be cheap."""
        self._get_observer = observer

    def set_fill_observer(self, observer: FillObserver | None) -> None:
        """Call ``observer(tool, key, fingerprint)`` after every `cached_call` fill with a tool,
        policy entry or not: an observer that remembers fingerprints sees changes at any age."""
        self._fill_observer = observer

    def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        """Store a JSON-serialisable value for ``ttl`` s (default ``M1_CACHE_DEFAULT_TTL_S``)."""
        self._set_encoded(key, _encode(value), ttl)

    def delete(self, key: str) -> None:
        """Remove one key; absent keys are fine."""
        name = self._name(key)

        def on_redis(client: redis.Redis) -> None:
            client.unlink(name)

        def on_memory() -> None:
            self._memory.delete(key)
            self._mark_dirty_locked(key)

        self._execute(on_redis, on_memory)

    def clear(self) -> None:
        """Remove every key of this deployment's namespace (SCAN + UNLINK; never FLUSHDB)."""

        def on_redis(client: redis.Redis) -> None:
            self._unlink_namespace(client)

        def on_memory() -> None:
            self._memory.clear()
            if self._client is not None:
                self._dirty.clear()
                self._wipe_namespace = True

        self._execute(on_redis, on_memory)

    def cached_call(
        self,
        key: str,
        fn: Callable[[], Any],
        *,
        ttl: float | None = None,
        tool_name: str | None = None,
    ) -> Any:
        """The cached value, or ``fn()`` cached for ``ttl``; concurrent misses share one call.

        Threads asking for the same key while ``fn`` runs wait for it and get its result (each a
        fresh copy) or its exception. Exceptions are not cached. ``tool_name`` is the events'
        ``toolName``: each caller records its get (hit or miss), the one that ran ``fn`` its set.
        """
        rule = self._rule(ttl, tool_name)
        hit, value, old = self._lookup(key, tool=tool_name, rule=rule)
        if hit:
            return value
        if old is not None and old.servable and rule is not None:
            self._revalidate(key, fn, rule, tool_name, old)
            return old.value
        with self._flights_lock:
            flight = self._flights.get(key)
            leader = flight is None
            if flight is None:
                flight = self._flights[key] = _Flight()
        if not leader:
            flight.done.wait()
            if flight.error is not None:
                raise flight.error
            return _decode(cast(bytes, flight.data))[1]
        try:
            # A leader that finished just before we registered has already filled the cache.
            hit, value, newer_old = self._lookup(key, count=False, rule=rule)
            if hit:
                flight.data = _encode(value)
                return value
            data = self._fill(key, fn, ttl, tool_name, rule, newer_old or old)
            flight.data = data
            return _decode(data)[1]
        except BaseException as exc:  # handed to the waiters, then re-raised unchanged
            flight.error = exc
            raise
        finally:
            with self._flights_lock:
                del self._flights[key]
            flight.done.set()

    def _rule(self, ttl: float | None, tool: str | None) -> TtlRule | None:
        policy = self._ttl_policy
        if ttl is not None or tool is None or policy is None:
            return None
        return policy(tool)

    def _servable(self, meta: _Meta, rule: TtlRule | None) -> bool:
        if rule is None or rule.stale_s <= 0:
            return False
        return self._wall_ms() < meta.fresh_ms + rule.stale_s * 1000

    def _fill(
        self,
        key: str,
        fn: Callable[[], Any],
        ttl: float | None,
        tool: str | None,
        rule: TtlRule | None,
        old: _Old | None,
    ) -> bytes:
        """Run ``fn`` and store its value: as is, or under ``rule`` with a header; the data."""
        data = _encode(fn())
        filled = self._fill_observer
        if rule is None:
            self._set_encoded(key, data, ttl, tool)
            if filled is not None and tool is not None:
                filled(tool, key, _fingerprint(data))
            return data
        now_ms = self._wall_ms()
        fingerprint = _fingerprint(data)
        ttl_ms = max(1, math.ceil(rule.ttl_s * 1000))
        header = f"{now_ms},{now_ms + ttl_ms},{fingerprint:x}\n".encode()
        grace_s = max(rule.stale_s, min(rule.ttl_s, OBSERVE_GRACE_MAX_S))
        stored = _HEADER + header + data
        self._set_encoded(key, stored, rule.ttl_s + grace_s, tool)
        observer = self._fetch_observer
        if observer is not None and tool is not None:
            if old is None:
                observer(tool, key, None, None)
            else:
                age_s = max(0.0, (now_ms - old.meta.stored_ms) / 1000.0)
                observer(tool, key, age_s, old.meta.fingerprint != fingerprint)
        if filled is not None and tool is not None:
            filled(tool, key, fingerprint)
        return stored

    def _revalidate(
        self, key: str, fn: Callable[[], Any], rule: TtlRule, tool: str | None, old: _Old
    ) -> None:
        """Refresh a stale entry on a background thread unless a flight of the key runs."""
        with self._flights_lock:
            if key in self._flights:
                return
            flight = self._flights[key] = _Flight()

        def refresh() -> None:
            try:
                flight.data = self._fill(key, fn, None, tool, rule, old)
            except Exception as exc:  # the caller's fn, any failure: logged, stale served meanwhile
                flight.error = exc
                logger.warning("cache refresh of a %s entry failed: %s", tool, type(exc).__name__)
            finally:
                with self._flights_lock:
                    del self._flights[key]
                flight.done.set()

        threading.Thread(target=refresh, name="m1-cache-revalidate", daemon=True).start()

    def _wall_ms(self) -> int:
        return int(self._wall() * 1000)

    def stats(self) -> CacheStats:
        """Hit and miss counts, breaker transitions and the backend in use."""
        with self._lock:
            return CacheStats(
                hits=self._hits,
                misses=self._misses,
                breaker_opens=self._opens,
                breaker_closes=self._closes,
                backend="memory" if self._active_client_locked() is None else "redis",
                forced=self._forced,
                memory_entries=len(self._memory),
                memory_bytes=self._memory.bytes,
            )

    def relieve(self) -> tuple[int, int]:
        """Drop the memory fallback's entries to free this process's memory: (entries, bytes).

        Redis is shared and left alone. Keys written on memory stay remembered, so a switch back
        to Redis still deletes them there: dropping entries never makes a later read staler.
        """
        with self._lock:
            entries = len(self._memory)
            return entries, self._memory.clear()

    def reset_pool(self) -> None:
        """Close every pooled Redis connection (new ones open on the next call), then probe at
        once if the breaker is open: a half-dead socket goes, and a Redis back is used again."""
        client = self._client
        if client is None:
            return
        client.connection_pool.disconnect()
        with self._lock:
            self._next_probe = self._clock()
        self._probe(wait=True)

    def ping(self) -> str | None:
        """PING Redis whatever the breaker says: None when it answers, else the error's class
        name (for a control command's report: a closed breaker only means no call failed yet)."""
        client = self._client
        if client is None:
            return "no Redis configured"
        try:
            client.ping()
        except (redis.RedisError, OSError) as exc:
            return type(exc).__name__
        return None

    def probe(self) -> bool:
        """PING Redis now if the breaker is open; True when the cache is on Redis afterwards.

        Calls probe by themselves at most every ``M1_CACHE_PROBE_S``; this lets a heartbeat or an
        operator skip the wait.
        """
        self._probe(wait=True)
        return self.backend == "redis"

    def force_backend(self, backend: Backend | None) -> None:
        """Pin the backend (None: automatic, the breaker decides), for the control channel.

        Pinned to "redis", the breaker stays closed and a Redis failure raises `UnavailableError`.
        Leaving memory for Redis first deletes in Redis the keys written on memory.
        """
        if backend not in ("redis", "memory", None):
            raise InputError("backend", f"{backend!r} is not a cache backend", ["redis", "memory"])
        client = self._client
        if backend == "redis" and client is None:
            raise InputError(
                "backend", "redis is not configured (M1_REDIS_URL is empty)", ["memory"]
            )
        with self._switch_lock:
            with self._lock:
                on_memory = self._active_client_locked() is None
                if backend == "memory":
                    if not on_memory:
                        self._start_memory_locked()
                    self._forced = "memory"
                elif backend is None:
                    self._forced = None
                    # Still on memory, now under the breaker: the next call probes and drains.
                    self._breaker_open = on_memory and client is not None
                    self._next_probe = self._clock()
                elif not on_memory:
                    self._forced = "redis"
                    self._breaker_open = False
            if backend == "redis" and on_memory:
                assert client is not None
                try:
                    self._drain_then(client, self._pin_redis_locked)
                except redis.RedisError as exc:
                    raise UnavailableError(
                        f"cache: cannot switch to redis, Redis failed: {type(exc).__name__}"
                    ) from exc
        logger.info("cache backend set to %s", backend or "automatic (circuit breaker)")

    # -- routing and the breaker ----------------------------------------------------------------

    def _execute(self, on_redis: Callable[[redis.Redis], _T], on_memory: Callable[[], _T]) -> _T:
        """Run one operation on the active backend; a Redis error opens the breaker and uses memory.

        The memory branch runs under the lock hold that chose memory, so a write can never land on
        memory after a switch back to Redis has drained the stale keys.
        """
        with self._lock:
            probe = self._claim_probe_locked()
            client = self._active_client_locked()
            if client is None and not probe:
                return on_memory()
        if probe:
            self._probe(wait=False)
            with self._lock:
                client = self._active_client_locked()
                if client is None:
                    return on_memory()
        assert client is not None
        try:
            return on_redis(client)
        except redis.RedisError as exc:
            with self._lock:
                opened = self._open_locked(exc)
                result = on_memory()
            if opened:
                logger.warning(
                    "cache circuit breaker open: Redis failed (%s: %s); on memory, probe every %ss",
                    type(exc).__name__,
                    exc,
                    self._probe_s,
                )
            return result

    def _active_client_locked(self) -> redis.Redis | None:
        if self._client is None or self._forced == "memory":
            return None
        if self._forced is None and self._breaker_open:
            return None
        return self._client

    def _claim_probe_locked(self) -> bool:
        """True for the one call that should PING now (open breaker, probe due); pushes the next."""
        if not self._breaker_open or self._forced is not None or self._client is None:
            return False
        now = self._clock()
        if now < self._next_probe:
            return False
        self._next_probe = now + self._probe_s
        return True

    def _open_locked(self, exc: redis.RedisError) -> bool:
        if self._forced == "redis":
            raise UnavailableError(
                f"cache: Redis failed ({type(exc).__name__}) and the cache is pinned to redis"
            ) from exc
        if self._forced is not None or self._breaker_open:
            return False
        self._breaker_open = True
        self._opens += 1
        self._next_probe = self._clock() + self._probe_s
        self._start_memory_locked()
        return True

    def _start_memory_locked(self) -> None:
        """Memory never saw Redis's writes, so it starts empty, with nothing to drain yet."""
        self._memory.clear()
        self._dirty.clear()
        self._wipe_namespace = False

    def _probe(self, *, wait: bool) -> None:
        client = self._client
        if client is None or not self._switch_lock.acquire(blocking=wait):
            return
        try:
            with self._lock:
                if not self._breaker_open or self._forced is not None:
                    return
                self._next_probe = self._clock() + self._probe_s
            try:
                client.ping()
                self._drain_then(client, self._close_locked)
            except redis.RedisError as exc:
                with self._lock:
                    self._next_probe = self._clock() + self._probe_s
                logger.debug("cache probe failed: %s", type(exc).__name__)
                return
        finally:
            self._switch_lock.release()
        logger.info("cache circuit breaker closed: Redis answers again; back on redis")

    def _drain_then(self, client: redis.Redis, switch: Callable[[], None]) -> None:
        """Delete in Redis what was written on memory, then ``switch`` in the same lock hold.

        Writes keep landing on memory while we delete, so loop until a look under the lock finds
        nothing left. Raises the `redis.RedisError` that stopped it, keeping what is left to do.
        """
        while True:
            with self._lock:
                dirty, wipe = self._dirty, self._wipe_namespace
                self._dirty, self._wipe_namespace = set(), False
                if not dirty and not wipe:
                    switch()
                    self._memory.clear()
                    return
            try:
                if wipe:
                    self._unlink_namespace(client)
                else:
                    names = (self._name(key) for key in dirty)
                    for batch in _batches(names, _UNLINK_BATCH):
                        client.unlink(*batch)
            except redis.RedisError:
                with self._lock:
                    self._wipe_namespace = self._wipe_namespace or wipe
                    for key in dirty:
                        self._mark_dirty_locked(key)
                raise

    def _close_locked(self) -> None:
        self._breaker_open = False
        self._closes += 1

    def _pin_redis_locked(self) -> None:
        self._forced = "redis"
        self._breaker_open = False

    def _mark_dirty_locked(self, key: str) -> None:
        """Remember a key written on memory; too many to remember means clearing the namespace."""
        if self._client is None or self._wipe_namespace:
            return
        self._dirty.add(key)
        if len(self._dirty) > DIRTY_KEYS_LIMIT:
            self._dirty.clear()
            self._wipe_namespace = True

    # -- helpers --------------------------------------------------------------------------------

    def _lookup(
        self,
        key: str,
        *,
        count: bool = True,
        tool: str | None = None,
        rule: TtlRule | None = None,
    ) -> tuple[bool, Any, _Old | None]:
        """(hit, value, old): tells a miss from a stored null, which `get` cannot; ``old`` is a
        policy entry past its TTL (a miss, but counted as a hit when ``rule`` lets it be served
        stale: no call was made for it). Counted (and recorded as a get) unless ``count`` is
        False: `cached_call`'s second look."""
        name = self._name(key)

        def on_redis(client: redis.Redis) -> tuple[Backend, bytes | str | None]:
            return "redis", client.get(name)

        def on_memory() -> tuple[Backend, bytes | str | None]:
            return "memory", self._memory.get(key, self._clock())

        started = _perf_counter()
        backend, raw = self._execute(on_redis, on_memory)
        hit, value, meta = (False, None, None) if raw is None else _decode_entry(raw)
        old = None
        if meta is not None and rule is not None:  # a shorter TTL applies to entries stored before
            meta = meta._replace(
                fresh_ms=min(meta.fresh_ms, meta.stored_ms + math.ceil(rule.ttl_s * 1000))
            )
        if hit and meta is not None and self._wall_ms() >= meta.fresh_ms:
            hit, old = False, _Old(value, meta, self._servable(meta, rule))
            value = None
        if count:
            served = hit or (old is not None and old.servable)
            with self._lock:
                if served:
                    self._hits += 1
                else:
                    self._misses += 1
            if self._recorder is not None:
                latency_ms = (_perf_counter() - started) * 1000.0
                self._recorder("cache_operations", (backend, tool, "get", served, latency_ms))
            observe = self._get_observer
            if observe is not None and tool is not None:
                observe(tool, key, served)
        return hit, value, old

    def _set_encoded(
        self, key: str, data: bytes, ttl: float | None, tool: str | None = None
    ) -> None:
        ttl_s = self._ttl(ttl)
        name = self._name(key)
        evicted: list[str | None] = []

        def on_redis(client: redis.Redis) -> Backend:
            client.set(name, data, px=max(1, math.ceil(ttl_s * 1000)))
            return "redis"

        def on_memory() -> Backend:
            evicted.extend(self._memory.set(key, data, self._clock() + ttl_s, tool))
            self._mark_dirty_locked(key)
            return "memory"

        started = _perf_counter()
        backend = self._execute(on_redis, on_memory)
        if self._recorder is not None:
            latency_ms = (_perf_counter() - started) * 1000.0
            self._recorder("cache_operations", (backend, tool, "set", False, latency_ms))
            for gone in evicted:
                self._recorder("cache_operations", ("memory", gone, "evict", False, 0.0))

    def _unlink_namespace(self, client: redis.Redis) -> None:
        pattern = redis_key(self._settings, "cache", "*")
        found: Iterator[bytes | str] = client.scan_iter(match=pattern, count=1000)
        for batch in _batches(found, _UNLINK_BATCH):
            client.unlink(*batch)

    def _name(self, key: str) -> str:
        if not isinstance(key, str) or not key:
            raise InputError("key", f"{key!r} is not a cache key", ["a non-empty string"])
        return redis_key(self._settings, "cache", key)

    def _ttl(self, ttl: float | None) -> float:
        if ttl is None:
            return self._default_ttl_s
        if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0 < ttl < math.inf:
            raise InputError("ttl", f"{ttl!r} is not a TTL", ["a positive number of seconds"])
        return float(ttl)


def _encode(value: Any) -> bytes:
    try:
        return json.dumps(value, separators=(",", ":"), allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        raise InputError(
            "value",
            f"a {type(value).__name__} is not JSON-serialisable ({exc})",
            ["dict", "list", "str", "int", "float (finite)", "bool", "None"],
        ) from exc


def _fingerprint(data: bytes) -> int:
    """64 bits of blake2b: tells a changed value from the same one (collisions: 2**-64)."""
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


def _decode(raw: bytes | str) -> tuple[bool, Any]:
    """(hit, value); text that is not JSON (written by something else) counts as a miss."""
    hit, value, _ = _decode_entry(raw)
    return hit, value


def _decode_entry(raw: bytes | str) -> tuple[bool, Any, _Meta | None]:
    """(hit, value, header of a policy entry or None); a bad header counts as a miss."""
    meta = None
    if raw[:1] in _HEADERS:
        data = raw.encode() if isinstance(raw, str) else raw
        line, _, raw = data[1:].partition(b"\n")
        try:
            stored, fresh, fingerprint = line.split(b",")
            meta = _Meta(int(stored), int(fresh), int(fingerprint, 16))
        except ValueError:
            return False, None, None
    try:
        return True, json.loads(raw), meta
    except ValueError:
        return False, None, None


def _batches(items: Iterable[_T], size: int) -> Iterator[list[_T]]:
    iterator = iter(items)
    while batch := list(itertools.islice(iterator, size)):
        yield batch
