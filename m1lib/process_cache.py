"""The process-wide cache behind ``m1lib.cached_call``, built on first use.

A service that imports ``m1lib`` and calls ``cached_call`` gets a :class:`~m1lib.cache.Cache` on
the configured Redis (memory only without ``M1_REDIS_URL``), recording its ``cache_operations``
into the process's default metrics runtime (the one :func:`m1lib.metrics.install_default` set
when the call is made). An API replica installs its own cache with :func:`install_cache`.

Entries of ``cached_call`` live per tool: key ``k`` of tool ``t`` is the cache key
``tool:<len(t)>:<t>:<k>`` (the length keeps ``("a:b", "c")`` and ``("a", "b:c")`` apart).

A call without ``ttl`` follows the cache TTL policy (``cache_ttl_policy``: the tool's TTL, else
``M1_CACHE_DEFAULT_TTL_S``); an explicit ``ttl`` wins. A replica's cache follows it through the
replica's refresher (and its ``cache.policy.reload`` command); the cache built here follows it
through its own refresher, reading every ``M1_CACHE_POLICY_REFRESH_S``, when ``M1_DATABASE_URL`` is
set (without it: the default TTL, no database file created).
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, TypeVar

from m1lib.cache import Cache
from m1lib.errors import InputError
from m1lib.metrics import pipeline as _pipeline
from m1lib.text import TOOL_MAX, check_text

if TYPE_CHECKING:
    from m1lib.ops.cost.policy_refresh import PolicyRefresher
    from m1lib.settings import Settings

__all__ = ["cached_call", "default_cache", "install_cache"]

_T = TypeVar("_T")
_PREFIXES_MAX: Final = 4096  # tools whose key prefix is remembered (beyond: checked every call)

_cache: Cache | None = None
_refresher: PolicyRefresher | None = None  # the TTL policy of the cache built here
_lock = threading.Lock()
_prefixes: dict[str, str] = {}  # tool name (checked) -> its key prefix


def _record(metric: str, values: tuple[Any, ...]) -> None:
    """Queue one event on the process's default runtime as it is now (no validation: the cache
    builds the values itself); the ingest thread checks it."""
    (_pipeline._default or _pipeline.default_runtime()).recorder.record_trusted(metric, values)


def default_cache() -> Cache:
    """The process's cache: the installed one, else one built from settings on first use."""
    global _cache
    if _cache is None:
        with _lock:
            if _cache is None:
                from m1lib.settings import get_settings

                settings = get_settings()
                cache = Cache.from_settings(settings, recorder=_record)
                _follow_policy(settings, cache)
                _cache = cache
    return _cache


def _follow_policy(settings: Settings, cache: Cache) -> None:
    """Start the TTL policy refresher of a cache built here, when a database is configured."""
    global _refresher
    if settings.database.url is None:
        return
    from m1lib.db.session import Database
    from m1lib.ops.cost.policy_refresh import PolicyRefresher

    process = f"{socket.gethostname()}-{os.getpid()}"  # a service: one row set per process
    _refresher = PolicyRefresher(
        settings, db=Database(settings), cache=cache, owns_db=True, process=process
    )
    _refresher.start()


def install_cache(cache: Cache | None) -> Cache | None:
    """Make ``cache`` the default (an API replica installs its own); returns the previous one.

    The previous one is not closed: its owner closes it. ``None`` resets to build-on-first-use.
    """
    global _cache, _refresher
    with _lock:
        previous, _cache = _cache, cache
        refresher, _refresher = _refresher, None
    if refresher is not None:  # the built cache's refresher goes with it
        refresher.stop()
    return previous


def cached_call(tool_name: str, key: str, fn: Callable[[], _T], *, ttl: float | None = None) -> _T:
    """``fn()``'s JSON value, cached per tool for ``ttl`` seconds (``M1_CACHE_DEFAULT_TTL_S``).

    Concurrent callers of one key share one ``fn()`` call. Records ``cache_operations`` with
    ``toolName``: a get per call (hit or miss), a set when ``fn`` ran, an evict when the memory
    fallback pushes an entry out. InputError for a tool name that is not 1-128 characters of text
    without control characters, an empty key, a bad ``ttl`` or a value JSON cannot hold.
    """
    try:
        prefix = _prefixes[tool_name]
    except (KeyError, TypeError):  # a tool not seen yet (TypeError: not even hashable)
        prefix = _prefix(tool_name)
    if not isinstance(key, str) or not key:
        raise InputError("key", f"{key!r:.100} is not a cache key", ["a non-empty string"])
    value: _T = (_cache or default_cache()).cached_call(
        prefix + key, fn, ttl=ttl, tool_name=tool_name
    )
    return value


def _prefix(tool_name: str) -> str:
    """The key prefix of a tool, after checking its name (InputError naming ``tool_name``)."""
    check_text("tool_name", tool_name, TOOL_MAX, required=True)
    prefix = f"tool:{len(tool_name)}:{tool_name}:"
    if len(_prefixes) < _PREFIXES_MAX:
        _prefixes[tool_name] = prefix
    return prefix
