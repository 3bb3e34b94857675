"""How production teaches the TTL optimiser: each process feeds one from its cache and publishes.

Why per process: the cache's gets and fills happen in every replica and service, and shipping each
one elsewhere would put I/O on the hot path. So every process that follows the TTL policy (it has
a :class:`~m1lib.ops.cost.policy_refresh.PolicyRefresher`) holds a :class:`CacheFeed`: the cache
calls it on every `cached_call` get (``observe_get``: a dict lookup and an add under a lock) and
every fill (``observe_fetch`` with the age of this process's previous fill of that key and whether
the value's fingerprint changed). Fills are remembered here, not in the cached entry, so every tool
is observed (with a rule or not) and a refetch hours later still counts: the cache's own fetch
observer only sees policy entries within a minute past expiry. A process sees only its own fills,
which is enough for the change rate (each is an honest interval-censored sample).

Staleness: per key the feed also counts the hits served since its last fill; the next fill
either clears them (same fingerprint: they were fresh) or adds them to the tool's
``suspect_hits`` (changed: an upper bound of stale responses, see
:mod:`m1lib.ops.cost.staleness`). Per tool it keeps cumulative hits, suspect hits, refetches and
changed refetches since ``started_at``; :func:`publish` appends them to ``cache_ttl_counters``.

Bounded memory: ``M1_COST_TTL_MAX_KEYS`` keys per tool (the first seen; later keys are not
observed) and ``_TOOLS_MAX`` tools. On its refresh loop the refresher calls :func:`publish` every
``M1_COST_TTL_PUBLISH_S``: one row per (process, tool) in ``cache_ttl_observations``, upserted, with
the recommendation, the request volume (total and by UTC hour of day) and the expected figures.

Costs: a tool's price per call from the price table (``tool_call_price``), else
``M1_COST_TTL_DEFAULT_CALL_USD``. Budgets: the tool's rule's ``staleness_budget_s``, else
``M1_COST_TTL_DEFAULT_BUDGET_S``.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Final

from sqlalchemy import select

from m1lib.db.models import CacheTtlObservation
from m1lib.ops.cost.optimiser import OptimiserConfig, TtlOptimiser
from m1lib.ops.cost.policy import ToolTtl
from m1lib.ops.cost.prices import PriceTable, default_prices
from m1lib.ops.cost.staleness import Counters, write_counters
from m1lib.text import TOOL_MAX

if TYPE_CHECKING:
    from m1lib.cache import Cache
    from m1lib.db.session import Database
    from m1lib.settings import Settings

__all__ = ["CacheFeed", "Observation", "load_observations", "publish"]

_TOOLS_MAX: Final = 256  # tools a feed follows; beyond, new tools are not observed


@dataclass(frozen=True)
class Observation:
    """One process's recommendation for one tool (a ``cache_ttl_observations`` row)."""

    process: str
    tool: str
    ttl_s: float
    reason: str
    requests_per_h: float
    change_rate_per_h: float | None = None
    expected_spend_usd_per_h: float | None = None
    expected_stale_per_h: float | None = None
    baseline_spend_usd_per_h: float | None = None
    baseline_stale_per_h: float | None = None
    tracked_keys: int = 0
    requests_by_hour: tuple[int, ...] = (0,) * 24
    updated_at: datetime | None = None

    @property
    def learned(self) -> bool:
        """The optimiser chose this TTL by cost-benefit (not a baseline or a probe)."""
        return self.reason.startswith("cost-benefit")


class CacheFeed:
    """A bounded :class:`TtlOptimiser` fed by one cache (see the module's docstring).

    >>> feed = CacheFeed(settings, "replica-1")
    >>> feed.attach(cache)  # from now on every cached_call get and fill is observed
    >>> feed.observations()  # what publish() writes
    """

    def __init__(
        self,
        settings: Settings,
        process: str,
        *,
        prices: PriceTable | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.process = process
        self._cost = settings.cost
        self._prices = prices
        self._clock = clock
        self._wall = wall_clock
        self._lock = threading.Lock()
        default_ttl = settings.cache.default_ttl_s
        self.optimiser = TtlOptimiser(
            OptimiserConfig(baseline_ttl_s=default_ttl, min_ttl_s=min(60.0, default_ttl))
        )
        # tool -> key -> (time, fingerprint) of this process's last fill and hits served since
        self._keys: dict[str, dict[str, tuple[float, int, int] | None]] = {}
        self._counts: dict[str, list[int]] = {}  # tool -> [hits, suspect hits, refetches, changed]
        self.started_at = datetime.fromtimestamp(wall_clock(), UTC)
        self._hours: dict[str, list[int]] = {}  # tool -> requests by UTC hour of day
        self._rules: Mapping[str, ToolTtl] = {}
        self.dropped = 0  # observations of keys or tools beyond the bounds

    def attach(self, cache: Cache) -> None:
        """Observe ``cache``'s `cached_call` gets and fills from now on."""
        cache.set_get_observer(self.observe_get)
        cache.set_fill_observer(self.observe_fill)

    def set_rules(self, rules: Mapping[str, ToolTtl]) -> None:
        """The policy now: each ruled tool's budget bounds its recommendation."""
        with self._lock:
            self._rules = dict(rules)
            for tool in self._keys:
                self._price_locked(tool)

    def observe_get(self, tool: str, key: str, served: bool) -> None:
        """A cache get (the hot path: a few dict operations under the lock, no I/O)."""
        with self._lock:
            keys = self._track_locked(tool, key)
            if keys is None:
                return
            self.optimiser.observe_get(tool, key, self._clock(), served)
            self._hours[tool][int(self._wall() // 3600) % 24] += 1
            if served:
                self._counts[tool][0] += 1
                last = keys[key]
                if last is not None:  # a hit on an entry this process filled: judged at refetch
                    keys[key] = (last[0], last[1], last[2] + 1)

    def observe_fill(self, tool: str, key: str, fingerprint: int) -> None:
        """``fn`` ran for ``tool``'s ``key`` and produced a value with ``fingerprint``."""
        with self._lock:
            keys = self._track_locked(tool, key)
            if keys is None:
                return
            now = self._clock()
            last = keys[key]
            if last is None:
                self.optimiser.observe_fetch(tool, key, now, None, None)
            else:
                changed = last[1] != fingerprint
                self.optimiser.observe_fetch(tool, key, now, max(0.0, now - last[0]), changed)
                counts = self._counts[tool]
                counts[2] += 1
                if changed:
                    counts[1] += last[2]  # served since the last fill, stale from some point on
                    counts[3] += 1
            keys[key] = (now, fingerprint, 0)

    def observations(self, now: datetime | None = None) -> list[Observation]:
        """The optimiser's recommendation per tool as rows to publish (the numpy work)."""
        with self._lock:
            choices = self.optimiser.recommend(self._clock())
            tracked = {tool: len(keys) for tool, keys in self._keys.items()}
            hours = {tool: tuple(counts) for tool, counts in self._hours.items()}
        at = now or datetime.now(UTC)
        return [
            Observation(
                process=self.process,
                tool=tool,
                ttl_s=choice.ttl_s,
                reason=choice.reason,
                requests_per_h=choice.requests_per_h,
                change_rate_per_h=choice.change_rate_per_h,
                expected_spend_usd_per_h=choice.expected_spend_usd_per_h,
                expected_stale_per_h=choice.expected_stale_per_h,
                baseline_spend_usd_per_h=choice.baseline_spend_usd_per_h,
                baseline_stale_per_h=choice.baseline_stale_per_h,
                tracked_keys=tracked.get(tool, 0),
                requests_by_hour=hours.get(tool, (0,) * 24),
                updated_at=at,
            )
            for tool, choice in choices.items()
            if tool in tracked
        ]

    def counters(self, now: datetime | None = None) -> list[Counters]:
        """Each observed tool's cumulative counts since ``started_at`` (what publish appends)."""
        at = now or datetime.now(UTC)
        with self._lock:
            counts = {tool: tuple(values) for tool, values in self._counts.items()}
        return [
            Counters(self.process, self.started_at, tool, at, *values)
            for tool, values in sorted(counts.items())
        ]

    def _track_locked(self, tool: str, key: str) -> dict[str, tuple[float, int, int] | None] | None:
        """The tool's key table with ``key`` in it, or None beyond the bounds (then dropped)."""
        keys = self._keys.get(tool)
        if keys is None:
            if len(self._keys) >= _TOOLS_MAX or not 0 < len(tool) <= TOOL_MAX:
                self.dropped += 1
                return None
            keys = self._keys[tool] = {}
            self._hours[tool] = [0] * 24
            self._counts[tool] = [0, 0, 0, 0]
            self._price_locked(tool)
        if key not in keys:
            if len(keys) >= self._cost.ttl_max_keys:
                self.dropped += 1
                return None
            keys[key] = None
        return keys

    def _price_locked(self, tool: str) -> None:
        price = (self._prices or default_prices()).tool_call_price(tool)
        self.optimiser.set_cost(
            tool, float(price) if price is not None else self._cost.ttl_default_call_usd
        )
        rule = self._rules.get(tool)
        budget = rule.staleness_budget_s if rule is not None else self._cost.ttl_default_budget_s
        self.optimiser.set_budget(tool, max(budget, self.optimiser.config.min_ttl_s))


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else value


def publish(
    db: Database,
    observations: Sequence[Observation],
    counters: Sequence[Counters] = (),
    *,
    keep: timedelta = timedelta(days=1),
) -> int:
    """Upsert each observation as its (process, tool) row and append ``counters`` (pruning
    counter rows older than ``keep``); the number of observations written. One process writes
    only its own rows, so a select then update-or-insert cannot race another writer."""
    with db.transaction() as session:
        if counters:
            write_counters(session, counters, prune_before=datetime.now(UTC) - keep)
        for obs in observations:
            row = session.scalar(
                select(CacheTtlObservation).where(
                    CacheTtlObservation.process == obs.process,
                    CacheTtlObservation.tool == obs.tool,
                )
            )
            if row is None:
                row = CacheTtlObservation(process=obs.process, tool=obs.tool)
                session.add(row)
            row.ttl_s = obs.ttl_s
            row.reason = obs.reason[:200]
            row.requests_per_h = obs.requests_per_h
            row.change_rate_per_h = _finite(obs.change_rate_per_h)
            row.expected_spend_usd_per_h = _finite(obs.expected_spend_usd_per_h)
            row.expected_stale_per_h = _finite(obs.expected_stale_per_h)
            row.baseline_spend_usd_per_h = _finite(obs.baseline_spend_usd_per_h)
            row.baseline_stale_per_h = _finite(obs.baseline_stale_per_h)
            row.tracked_keys = obs.tracked_keys
            row.requests_by_hour = list(obs.requests_by_hour)
            row.updated_at = obs.updated_at or datetime.now(UTC)
    return len(observations)


def load_observations(db: Database, *, since: datetime) -> list[Observation]:
    """Every published row updated at or after ``since``, by tool then process."""
    with db.transaction() as session:
        rows = session.scalars(
            select(CacheTtlObservation)
            .where(CacheTtlObservation.updated_at >= since)
            .order_by(CacheTtlObservation.tool, CacheTtlObservation.process)
        ).all()
        return [_from_row(row) for row in rows]


def _from_row(row: CacheTtlObservation) -> Observation:
    hours = tuple(int(h) for h in (row.requests_by_hour or [])[:24])
    return Observation(
        process=row.process,
        tool=row.tool,
        ttl_s=row.ttl_s,
        reason=row.reason,
        requests_per_h=row.requests_per_h,
        change_rate_per_h=row.change_rate_per_h,
        expected_spend_usd_per_h=row.expected_spend_usd_per_h,
        expected_stale_per_h=row.expected_stale_per_h,
        baseline_spend_usd_per_h=row.baseline_spend_usd_per_h,
        baseline_stale_per_h=row.baseline_stale_per_h,
        tracked_keys=row.tracked_keys,
        requests_by_hour=hours + (0,) * (24 - len(hours)),
        updated_at=row.updated_at,
    )
