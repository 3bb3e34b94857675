"""Per-tool cache TTLs chosen by cost-benefit, learned online from what the cache sees (issue 12).

Why a model and not a search: M1 cannot try every TTL on live traffic, but it can watch requests and
refetches and fit the two numbers that decide the trade-off. For one key asked ``r`` times a second
(Poisson), whose value changes ``lam`` times a second (Poisson), held for ``T`` seconds after each
miss, a cycle is a miss then ``T`` seconds of hits then a wait of ``1/r`` for the next request:

- misses per second: ``r / (1 + r T)``, each costing the tool's price of one uncached call;
- stale hits per second: ``r**2 (T - (1 - exp(-lam T)) / lam) / (1 + r T)`` (a hit ``s`` after the
  fetch is stale when the key changed within ``s``: probability ``1 - exp(-lam s)``).

The rates come from decayed per-key request counts (so a shifting popularity ranking is forgotten
at ``rate_half_life_s``), ``lam`` from refetches only: when a miss replaces a value fetched ``a``
seconds earlier, whether the new value differs says "changed at least once in ``a``", an
interval-censored sample whose likelihood is ``1 - exp(-lam a)`` or ``exp(-lam a)``. The change
events themselves are never seen.

The constraint "no more stale responses than the baseline TTL" is global, so staleness is spent
where it saves most: minimise ``spend + mu * stale`` per tool over a TTL grid and choose the
smallest ``mu`` whose expected total stale stays within ``stale_margin`` times the baseline's
(both from the same estimates). Each TTL stays within ``[min_ttl_s, min(max_ttl_s, budget)]``, the
tool's staleness budget. A tool without enough refetches, or without a cost, keeps the baseline.

Pure: no I/O, no clock (every call takes ``t``, seconds on any monotonic scale), no Prefect.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from m1lib.errors import InputError

FloatArray = npt.NDArray[np.float64]

_AGE_BINS = np.logspace(0.0, 7.0, 57)  # refetch ages 1 s .. 116 days, 8 bins a decade
_LAM_MIN, _LAM_MAX = 1e-10, 1.0  # changes per second the estimator can answer
_RENORM_EXPONENT = 30.0  # rescale decayed weights before exp() can overflow


@dataclass(frozen=True)
class OptimiserConfig:
    """The knobs; defaults fit a cache whose baseline is one hour."""

    baseline_ttl_s: float = 3600.0
    min_ttl_s: float = 60.0
    max_ttl_s: float = 86_400.0
    warmup_s: float = 1800.0  # observe this long before leaving the baseline
    min_refetches: float = 20.0  # per tool (decayed weight) before its change rate is trusted
    rate_half_life_s: float = 6 * 3600.0
    change_half_life_s: float = 24 * 3600.0
    stale_margin: float = (
        0.8  # aim expected stale at this fraction of the baseline's (room for drift)
    )
    min_unchanged: int = 3  # refetches that found the same value before lam has an upper bound
    probe_ttl_s: float | None = None  # TTL while probing the change rate (None: min_ttl_s)
    grid_points: int = 48

    def __post_init__(self) -> None:
        for name in ("baseline_ttl_s", "min_ttl_s", "max_ttl_s", "rate_half_life_s"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and 0 < value < math.inf):
                raise InputError(name, f"{value!r} is not a positive number of seconds")
        if self.change_half_life_s <= 0 or self.warmup_s < 0 or self.min_refetches < 0:
            raise InputError("config", "half-lives must be positive, warmup and refetches >= 0")
        if self.min_ttl_s > self.max_ttl_s:
            raise InputError("min_ttl_s", f"{self.min_ttl_s} exceeds max_ttl_s {self.max_ttl_s}")
        if not 0 < self.stale_margin <= 1:
            raise InputError("stale_margin", f"{self.stale_margin!r}", ["a number in (0, 1]"])
        if self.grid_points < 2:
            raise InputError("grid_points", f"{self.grid_points!r}", ["an integer >= 2"])


@dataclass(frozen=True)
class TtlChoice:
    """One tool's recommended TTL, why, and the expected figures behind it (per hour).

    ``change_rate_per_h`` and the ``expected_*``/``baseline_*`` figures are None when the tool kept
    the baseline for lack of data: there is no estimate to show.
    """

    ttl_s: float
    reason: str
    requests_per_h: float
    change_rate_per_h: float | None = None
    expected_spend_usd_per_h: float | None = None
    expected_stale_per_h: float | None = None
    baseline_spend_usd_per_h: float | None = None
    baseline_stale_per_h: float | None = None


@dataclass
class _Tool:
    """What one tool has shown: key slots, refetch outcomes by age bin, its price and budget."""

    keys: dict[str, int] = field(default_factory=dict)  # key -> slot in TtlOptimiser._counts
    changed_w: FloatArray = field(default_factory=lambda: np.zeros(len(_AGE_BINS) + 1))
    changed_wa: FloatArray = field(default_factory=lambda: np.zeros(len(_AGE_BINS) + 1))
    unchanged_wa: float = 0.0  # decayed sum of ages of refetches that found the same value
    unchanged_seen: int = 0  # refetches that found the same value, ever (not decayed)
    refetches: float = 0.0  # decayed count of refetches with an age
    cost_usd: float | None = None
    budget_s: float | None = None


class TtlOptimiser:
    """Feed it what the cache sees; ask it for TTLs now and then (every few minutes is plenty).

    ``observe_get`` is cheap (a dict lookup and an add) so it can run on every cache get;
    ``recommend`` does the numpy work.
    """

    def __init__(
        self,
        config: OptimiserConfig | None = None,
        *,
        costs: Mapping[str, float] | None = None,
        budgets: Mapping[str, float] | None = None,
    ) -> None:
        self.config = config or OptimiserConfig()
        self._tau_r = self.config.rate_half_life_s / math.log(2)
        self._tau_c = self.config.change_half_life_s / math.log(2)
        self._tools: dict[str, _Tool] = {}
        self._counts: list[float] = []  # decayed gets per key slot, scaled by exp((t-ref)/tau_r)
        self._slot_tool: list[str] = []
        self._ref_r: float | None = None  # time the count weights are relative to
        self._ref_c: float | None = None
        self._first_t: float | None = None
        for tool, usd in (costs or {}).items():
            self.set_cost(tool, usd)
        for tool, seconds in (budgets or {}).items():
            self.set_budget(tool, seconds)

    # -- what the cache and the price table tell it --------------------------------------------

    def set_cost(self, tool: str, usd: float) -> None:
        """The price of one uncached call of ``tool`` (what a hit saves)."""
        if not (isinstance(usd, int | float) and 0 <= usd < math.inf):
            raise InputError("cost_usd", f"{usd!r} is not a price", ["a finite number >= 0"])
        self._tool(tool).cost_usd = float(usd)

    def set_budget(self, tool: str, max_ttl_s: float) -> None:
        """The tool's staleness budget: its TTL never exceeds this (nor ``max_ttl_s``)."""
        low = self.config.min_ttl_s
        if not (isinstance(max_ttl_s, int | float) and low <= max_ttl_s < math.inf):
            raise InputError("budget_s", f"{max_ttl_s!r}", [f"seconds >= min_ttl_s ({low})"])
        self._tool(tool).budget_s = float(max_ttl_s)

    def observe_get(self, tool: str, key: str, t: float, hit: bool) -> None:
        """One cache get of ``tool``'s ``key`` at ``t``; hit or miss, it counts toward the rate."""
        state = self._tools.get(tool) or self._tool(tool)
        slot = state.keys.get(key)
        if slot is None:
            slot = state.keys[key] = len(self._counts)
            self._counts.append(0.0)
            self._slot_tool.append(tool)
        if self._ref_r is None:
            self._ref_r = self._first_t = t
        exponent = (t - self._ref_r) / self._tau_r
        if exponent > _RENORM_EXPONENT:
            self._rescale_counts(t)
            exponent = 0.0
        self._counts[slot] += math.exp(exponent)

    def observe_fetch(
        self, tool: str, key: str, t: float, age_s: float | None, changed: bool | None
    ) -> None:
        """A miss fetched ``tool``'s ``key`` at ``t``. ``age_s``: how long ago the value it replaces
        was fetched; ``changed``: whether the new value differs. Both None for a first fetch (or
        when M1 kept no trace of the old value): nothing is learned about changes then."""
        if age_s is None or changed is None:
            return
        if not (age_s >= 0 and math.isfinite(age_s)):
            raise InputError("age_s", f"{age_s!r} is not an age", ["seconds >= 0"])
        state = self._tools.get(tool) or self._tool(tool)
        if self._ref_c is None:
            self._ref_c = t
            if self._first_t is None:
                self._first_t = t
        exponent = (t - self._ref_c) / self._tau_c
        if exponent > _RENORM_EXPONENT:
            self._rescale_changes(t)
            exponent = 0.0
        weight = math.exp(exponent)
        state.refetches += weight
        if changed:
            index = int(np.searchsorted(_AGE_BINS, age_s))
            state.changed_w[index] += weight
            state.changed_wa[index] += weight * age_s
        else:
            state.unchanged_seen += 1
            state.unchanged_wa += weight * age_s

    # -- the recommendation ---------------------------------------------------------------------

    def recommend(self, t: float) -> dict[str, TtlChoice]:
        """A TTL for every tool seen or priced, as of ``t`` (normally the latest observation's time:
        rates are estimated over the window up to ``t``)."""
        cfg = self.config
        names = sorted(self._tools)
        if not names:
            return {}
        low = cfg.min_ttl_s
        highs = np.array([self._high(self._tools[name]) for name in names])
        baselines = np.clip(cfg.baseline_ttl_s, low, highs)
        rates = self._key_rates(t)
        per_tool_rates = self._rates_by_tool(names, rates)
        requests_h = np.array([float(r.sum()) * 3600.0 for r in per_tool_rates])
        warm = self._first_t is not None and t - self._first_t >= cfg.warmup_s
        lams = self._change_rates(names, t)
        learned = []
        probing: set[str] = set()
        reasons: dict[str, str] = {}
        for index, name in enumerate(names):
            state = self._tools[name]
            if not warm:
                reasons[name] = "baseline: warming up"
            elif state.cost_usd is None:
                reasons[name] = "baseline: no cost per call known"
            elif self._decayed(state.refetches, t) < cfg.min_refetches:
                reasons[name] = "baseline: too few refetches to estimate the change rate"
            elif requests_h[index] <= 0:
                reasons[name] = "baseline: no requests"
            elif state.unchanged_seen < cfg.min_unchanged:
                reasons[name] = "probing: every refetch so far found a change"
                probing.add(name)
            else:
                learned.append(index)
        probe_ttl = cfg.min_ttl_s if cfg.probe_ttl_s is None else cfg.probe_ttl_s
        choices = {
            name: TtlChoice(
                float(min(max(probe_ttl, low), highs[i]) if name in probing else baselines[i]),
                reasons[name],
                float(requests_h[i]),
            )
            for i, name in enumerate(names)
            if name in reasons
        }
        if not learned:
            return choices
        grid = _grid(cfg, highs[learned])
        costs = np.array([self._tools[names[i]].cost_usd or 0.0 for i in learned])
        spend = np.empty((len(learned), len(grid)))
        stale = np.empty_like(spend)
        base_spend = np.empty(len(learned))
        base_stale = np.empty(len(learned))
        for row, index in enumerate(learned):
            columns = np.append(grid, baselines[index])
            misses, stales = _curves(per_tool_rates[index], float(lams[index]), columns)
            spend[row] = costs[row] * misses[:-1]
            stale[row] = stales[:-1]
            base_spend[row], base_stale[row] = costs[row] * misses[-1], stales[-1]
        allowed = (grid[None, :] >= low) & (grid[None, :] <= highs[learned][:, None] * (1 + 1e-9))
        picks = allocate(spend, stale, allowed, cfg.stale_margin * float(base_stale.sum()))
        for row, index in enumerate(learned):
            ttl = float(grid[picks[row]])
            at_budget = self._tools[names[index]].budget_s is not None and ttl >= highs[index]
            reason = "cost-benefit" + (": capped by the staleness budget" if at_budget else "")
            choices[names[index]] = TtlChoice(
                ttl_s=ttl,
                reason=reason,
                requests_per_h=float(requests_h[index]),
                change_rate_per_h=float(lams[index]) * 3600.0,
                expected_spend_usd_per_h=float(spend[row, picks[row]]) * 3600.0,
                expected_stale_per_h=float(stale[row, picks[row]]) * 3600.0,
                baseline_spend_usd_per_h=float(base_spend[row]) * 3600.0,
                baseline_stale_per_h=float(base_stale[row]) * 3600.0,
            )
        return dict(sorted(choices.items()))

    # -- estimates ------------------------------------------------------------------------------

    def _tool(self, tool: str) -> _Tool:
        if not isinstance(tool, str) or not tool:
            raise InputError("tool", f"{tool!r} is not a tool name", ["a non-empty string"])
        return self._tools.setdefault(tool, _Tool())

    def _high(self, state: _Tool) -> float:
        cap = self.config.max_ttl_s
        return cap if state.budget_s is None else min(cap, state.budget_s)

    def _rescale_counts(self, t: float) -> None:
        assert self._ref_r is not None
        factor = math.exp(-(t - self._ref_r) / self._tau_r)
        self._counts = [count * factor for count in self._counts]
        self._ref_r = t

    def _rescale_changes(self, t: float) -> None:
        assert self._ref_c is not None
        factor = math.exp(-(t - self._ref_c) / self._tau_c)
        for state in self._tools.values():
            state.changed_w *= factor
            state.changed_wa *= factor
            state.unchanged_wa *= factor
            state.refetches *= factor
        self._ref_c = t

    def _key_rates(self, t: float) -> FloatArray:
        """Requests per second per key slot: decayed count over the decayed observation window."""
        if self._ref_r is None or self._first_t is None:
            return np.zeros(0)
        counts = np.asarray(self._counts, dtype=np.float64) * math.exp(
            (self._ref_r - t) / self._tau_r
        )
        elapsed = max(t - self._first_t, 1.0)
        window = self._tau_r * -math.expm1(-elapsed / self._tau_r)
        return counts / window

    def _rates_by_tool(self, names: list[str], rates: FloatArray) -> list[FloatArray]:
        out = []
        for name in names:
            slots = np.fromiter(self._tools[name].keys.values(), dtype=np.int64)
            out.append(rates[slots] if len(slots) else np.zeros(0))
        return out

    def _decayed(self, weight: float, t: float) -> float:
        """A refetch weight in plain refetches as of ``t`` (the newest counts about 1)."""
        if self._ref_c is None:
            return 0.0
        return weight * math.exp((self._ref_c - t) / self._tau_c)

    def _change_rates(self, names: list[str], t: float) -> FloatArray:
        """Maximum-likelihood change rate per tool from its censored refetch outcomes.

        One pseudo-refetch that found a change after the baseline TTL keeps a tool that never
        showed a change away from "never changes" (and errs toward shorter TTLs, the safe side).
        """
        cfg = self.config
        factor = 0.0 if self._ref_c is None else math.exp((self._ref_c - t) / self._tau_c)
        changed_w = np.stack([self._tools[n].changed_w for n in names]) * factor
        changed_wa = np.stack([self._tools[n].changed_wa for n in names]) * factor
        unchanged = np.array([self._tools[n].unchanged_wa for n in names]) * factor
        ages = np.where(changed_w > 0, changed_wa / np.maximum(changed_w, 1e-300), 1.0)
        ages = np.maximum(ages, 1e-6)  # a change seen at age 0 still bounds lam from below
        ages = np.concatenate([ages, np.full((len(names), 1), cfg.baseline_ttl_s)], axis=1)
        weights = np.concatenate([changed_w, np.ones((len(names), 1))], axis=1)
        lo = np.full(len(names), math.log(_LAM_MIN))
        hi = np.full(len(names), math.log(_LAM_MAX))
        for _ in range(60):  # bisection on log(lam): the score falls as lam grows
            mid = (lo + hi) / 2
            lam = np.exp(mid)[:, None]
            score = (weights * ages / np.expm1(np.minimum(lam * ages, 700.0))).sum(1) - unchanged
            grows = score > 0
            lo = np.where(grows, mid, lo)
            hi = np.where(grows, hi, mid)
        lam_hat: FloatArray = np.exp((lo + hi) / 2)
        return lam_hat


def _grid(cfg: OptimiserConfig, highs: FloatArray) -> FloatArray:
    """Log-spaced TTLs from min to max, plus every tool's cap and the baseline, sorted."""
    base = np.logspace(math.log10(cfg.min_ttl_s), math.log10(cfg.max_ttl_s), cfg.grid_points)
    extra = np.append(highs, cfg.baseline_ttl_s)
    grid: FloatArray = np.unique(np.clip(np.concatenate([base, extra]), cfg.min_ttl_s, None))
    return grid


def _curves(rates: FloatArray, lam: float, ttls: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Expected misses and stale hits per second of one tool's keys at each TTL."""
    r = rates[rates > 0][:, None]
    ttl = ttls[None, :]
    denominator = 1.0 + r * ttl
    misses: FloatArray = (r / denominator).sum(0)
    stale: FloatArray = (r * r / denominator).sum(0) * stale_window(lam, ttls)
    return misses, stale


def stale_window(lam: float, ttls: FloatArray) -> FloatArray:
    """``T - (1 - exp(-lam T)) / lam``: the expected time within a TTL after the first change."""
    x = lam * ttls
    series = ttls * (x / 2 - x * x / 6 + x**3 / 24)
    exact = ttls - (-np.expm1(-x)) / max(lam, 1e-300)
    window: FloatArray = np.where(x < 1e-3, series, exact)
    return window


def allocate(
    spend: FloatArray, stale: FloatArray, allowed: npt.NDArray[np.bool_], budget: float
) -> npt.NDArray[np.int64]:
    """Per row, the grid column minimising ``spend + mu * stale`` for the smallest ``mu`` whose
    total stale fits ``budget`` (the most stale-averse choice if none does)."""
    inf = np.inf

    def pick(mu: float) -> npt.NDArray[np.int64]:
        objective = np.where(allowed, spend + mu * stale, inf)
        # Ties (e.g. mu = 0 with flat spend) go to the shorter TTL: argmin takes the first.
        chosen: npt.NDArray[np.int64] = np.argmin(objective, axis=1)
        return chosen

    def total(choice: npt.NDArray[np.int64]) -> float:
        return float(stale[np.arange(len(choice)), choice].sum())

    cheapest = pick(0.0)
    if total(cheapest) <= budget:
        return cheapest
    lo, hi = -30.0, 30.0  # log(mu), mu in USD per stale response
    best = pick(math.exp(hi))
    for _ in range(60):
        mid = (lo + hi) / 2
        choice = pick(math.exp(mid))
        if total(choice) <= budget:
            hi, best = mid, choice
        else:
            lo = mid
    return best
