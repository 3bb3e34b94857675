"""How a process follows the cache TTL policy: an in-memory snapshot, refreshed off the hot path.

A :class:`PolicyRefresher` reads ``cache_ttl_policy`` and hands its cache a new
:class:`~m1lib.ops.cost.policy.PolicySnapshot`; `cached_call` only looks the tool up in it. It
reads on start, every ``M1_CACHE_POLICY_REFRESH_S`` (one background loop) and when asked: an API
replica registers :func:`register_policy_commands`, so ``cache.policy.reload`` reaches it at once;
a service (no control listener) follows within the refresh period. A read that fails (database
away, table not migrated yet) keeps the snapshot it had: the cache never breaks for it.

It also counts, per tool, what refetches of policy entries saw (:class:`ChangeCounters`): the
change rate the optimiser wants, estimated from what this process sees. With
``M1_COST_TTL_OBSERVE`` on it also feeds a :class:`~m1lib.ops.cost.observe.CacheFeed` from the
cache and publishes its recommendation every ``M1_COST_TTL_PUBLISH_S`` on the same loop.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import exc

from m1lib.errors import M1Error
from m1lib.loops import LoopThreads
from m1lib.ops.cost.observe import CacheFeed, publish
from m1lib.ops.cost.policy import RELOAD_COMMAND, PolicySnapshot
from m1lib.ops.cost.policy_store import load_policy

if TYPE_CHECKING:
    from m1lib.cache import Cache
    from m1lib.control import CommandRegistry
    from m1lib.db.session import Database
    from m1lib.settings import Settings

__all__ = ["ChangeCounters", "ChangeRate", "PolicyRefresher", "register_policy_commands"]

logger = logging.getLogger("m1.cache.policy")

_TOOLS_MAX: Final = 4096  # tools counted; beyond, new tools are not counted


@dataclass(frozen=True)
class ChangeRate:
    """What refetches of one tool's entries found since the process started."""

    refetches: int  # with the previous value still stored, so comparable
    changed: int
    unknown: int  # the previous value had gone (no comparison)
    exposure_s: float  # the summed ages of the compared values

    @property
    def changes_per_s(self) -> float | None:
        """Changes per second of value age: changed / exposure (None before any exposure)."""
        return None if self.exposure_s <= 0 else self.changed / self.exposure_s

    def to_json(self) -> dict[str, Any]:
        return {
            "refetches": self.refetches,
            "changed": self.changed,
            "unknown": self.unknown,
            "exposure_s": self.exposure_s,
            "changes_per_s": self.changes_per_s,
        }


class ChangeCounters:
    """Per-tool counts of refetches and how many found a changed value (a cache fetch observer).

    Thread-safe and bounded (``_TOOLS_MAX`` tools). ``rates()`` is what an optimiser's
    ``observe_fetch`` could be fed with in bulk; ``GET /api/m1/cache/policy`` shows it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, list[float]] = {}  # tool -> [refetches, changed, unknown, exposure]

    def __call__(self, tool: str, _key: str, age_s: float | None, changed: bool | None) -> None:
        with self._lock:
            counts = self._counts.get(tool)
            if counts is None:
                if len(self._counts) >= _TOOLS_MAX:
                    return
                counts = self._counts[tool] = [0, 0, 0, 0.0]
            if changed is None or age_s is None:
                counts[2] += 1
                return
            counts[0] += 1
            counts[1] += int(changed)
            counts[3] += age_s

    def rates(self) -> dict[str, ChangeRate]:
        with self._lock:
            return {
                tool: ChangeRate(int(c[0]), int(c[1]), int(c[2]), c[3])
                for tool, c in sorted(self._counts.items())
            }


class PolicyRefresher:
    """Keeps one cache on the database's TTL policy: at start, periodically and on demand.

    >>> refresher = PolicyRefresher(settings, db=db, cache=cache)
    >>> refresher.start()  # reads now, then every M1_CACHE_POLICY_REFRESH_S
    >>> refresher.reload()  # what the cache.policy.reload command runs
    >>> refresher.stop()
    """

    def __init__(
        self,
        settings: Settings,
        *,
        db: Database,
        cache: Cache,
        owns_db: bool = False,
        process: str | None = None,
        feed: CacheFeed | None = None,
    ) -> None:
        self._settings = settings
        self._db = db
        self._owns_db = owns_db  # dispose it on stop (a service's refresher built its own)
        self._cache = cache
        self._lock = threading.Lock()  # one read at a time: the last read wins, never an older one
        self._loops = LoopThreads("m1-cache-policy", logger=logger)
        self.snapshot = PolicySnapshot()
        self.counters = ChangeCounters()
        self.failures = 0
        cache.set_ttl_policy(self.snapshot)
        cache.set_fetch_observer(self.counters)
        # what this process's cache sees, for the optimize-cost flow (None: M1_COST_TTL_OBSERVE off)
        if feed is None and settings.cost.ttl_observe:
            feed = CacheFeed(settings, process or settings.replica_id)
        self.feed = feed
        if feed is not None:
            feed.attach(cache)
        self._published_at: float | None = None

    def reload(self) -> str:
        """Read the policy now and install it; a short text for a command's ack.

        Raises the database's M1 error (the command's ack says so); the loop logs and retries.
        """
        with self._lock:
            rules = load_policy(self._db)
            snapshot = PolicySnapshot(
                rules.values(), version=max((r.version for r in rules.values()), default=0)
            )
            self.snapshot = snapshot
            self._cache.set_ttl_policy(snapshot)
            if self.feed is not None:
                self.feed.set_rules(rules)
        return f"cache TTL policy loaded: {len(snapshot)} tools"

    def publish(self) -> int:
        """Publish the feed's recommendation now (rows written; 0 without a feed). Raises the
        database's error; the loop logs it and tries again next period."""
        if self.feed is None:
            return 0
        written = publish(
            self._db,
            self.feed.observations(),
            self.feed.counters(),
            keep=self._settings.housekeeping.ttl_observation_retention,
        )
        self._published_at = time.monotonic()
        return written

    def _publish_due(self) -> None:
        if self.feed is None:
            return
        last = self._published_at
        if last is None or time.monotonic() - last >= self._settings.cost.ttl_publish_s:
            try:
                self.publish()
            except (M1Error, exc.SQLAlchemyError) as error:
                self._published_at = time.monotonic()  # try again next period, not every loop
                logger.warning("cache TTL observations not published: %s", error)

    def start(self) -> None:
        """Read now and then every ``M1_CACHE_POLICY_REFRESH_S`` (0: only now) on one thread."""
        self._loops.start([("refresh", self._loop)])

    def stop(self) -> None:
        """Stop the loop (safe twice); the snapshot stays installed."""
        self._loops.stop()
        if self._owns_db:
            self._db.dispose()

    def _loop(self) -> None:
        """Reload every refresh period (0: only at start) and publish when due; with no periodic
        reload the loop still wakes every ``M1_COST_TTL_PUBLISH_S`` to publish."""
        period = self._settings.cache.policy_refresh_s
        reload = True
        while True:
            if reload:
                try:
                    self.reload()
                except (M1Error, exc.SQLAlchemyError) as error:
                    self.failures += 1
                    logger.warning("cache TTL policy not read, keeping the last one: %s", error)
            self._publish_due()
            if period > 0:
                wait = period
            elif self.feed is not None:
                wait, reload = self._settings.cost.ttl_publish_s, False
            else:
                return
            if not self._loops.sleep(wait):
                return


def register_policy_commands(registry: CommandRegistry, refresher: PolicyRefresher) -> None:
    """``cache.policy.reload`` (args ``{}``): re-read the TTL policy now; idempotent."""

    def reload(_args: dict[str, object]) -> str:
        return refresher.reload()

    registry.register(RELOAD_COMMAND, reload)
