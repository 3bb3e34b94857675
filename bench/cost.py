"""Cost: per-tool cache TTLs from M1's optimiser against a static 1 h TTL and a hindsight oracle.

Traces (issue 12; families and parameters as stated, seeds 1 to 3): 50 tools, 10,000 keys with Zipf
popularity (s = 1.1, ranks assigned to keys by a seeded shuffle, keys to tools uniformly), 5
requests per second on average, each tool's change rate log-uniform between once a minute and once
a day (each key of the tool changes as a Poisson process at that rate), one price per uncached call
per tool. Families: ``steady`` (1 day, constant rate), ``diurnal`` (2 days, 09:00-17:00 five times
the night rate), ``bursty`` (1 day plus 20 flash crowds of 10 minutes at 50 times the key's rate on
a key drawn by popularity, so a crowd lands where traffic is), ``shifting`` (3 days, the popularity
ranking rotated by a third of the keys each day). Changes are drawn per get: between two gets of
one key the number of changes is Poisson(rate x gap), which is exactly what a change-event stream
would give and replays millions of changes without materialising them.

Prices: per tool a model from M1's built-in price table (``m1lib.ops.cost.prices``: haiku 1/5,
sonnet 3/15, opus 5/25 USD per million input/output tokens), input tokens log-uniform 200-20,000,
output 50-2,000, plus a tool price of 0, 0.1, 0.5 or 1 cent (the table has no built-in paid tools).

Each trace is replayed through M1's real ``Cache`` (memory backend, on a simulated clock; default
``M1_CACHE_MAX_ENTRIES`` = 10,000, so every key fits and capacity is not the story) three times:
``baseline`` (1 h TTL for all), ``optimiser`` (``TtlOptimiser`` fed only what the cache sees: gets,
and on a refetch the replaced value's age and whether the new one differs; baseline for its warm-up,
then re-asked every simulated 10 minutes), ``oracle`` (the best static per-tool TTL in hindsight:
every tool's spend and stale counts over a TTL grid computed exactly with numpy, then the cheapest
allocation whose total stale does not exceed the baseline's; replayed through the cache too, which
must reproduce numpy's counts). A response is stale when it comes from cache after its key changed.

``--replay TRACE.csv --tools TOOLS.csv`` replays a recorded trace instead and prints one JSON object
(see the README's "Cost benchmark" section for the format).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import multiprocessing
import resource
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _harness
import numpy as np
import numpy.typing as npt
from _harness import Figure, Measured
from readme_table import rewrite

from m1lib.cache import Cache
from m1lib.ops.cost.observe import CacheFeed
from m1lib.ops.cost.optimiser import OptimiserConfig, TtlOptimiser, allocate
from m1lib.ops.cost.prices import DEFAULT_MODEL_PRICES, PriceTable
from m1lib.settings import Settings

NAME = "cost"
FAMILIES = ("steady", "diurnal", "bursty", "shifting")
DAYS = {"steady": 1, "diurnal": 2, "bursty": 1, "shifting": 3}
SEEDS = (1, 2, 3)
TOOLS, KEYS, ZIPF_S, MEAN_RPS = 50, 10_000, 1.1, 5.0
DAY = 86_400.0
BASELINE_TTL = 3600.0
REOPTIMISE_S = 600.0
TARGET_SAVING = 20.0  # percent less spend than the baseline, every trace and seed
MODELS = {  # USD per million input and output tokens: M1's built-in price table
    model: (float(price_in), float(price_out))
    for model, (price_in, price_out) in DEFAULT_MODEL_PRICES.items()
}
TOOL_PRICES = (0.0, 0.001, 0.005, 0.01)  # USD per call; the built-in table has no paid tools
ORACLE_GRID = np.unique(np.append(np.logspace(np.log10(60.0), np.log10(DAY), 33), BASELINE_TTL))

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


@dataclass
class Trace:
    """Gets in time order with the version each get's key has then, and what the tools cost."""

    t: FloatArray
    key: IntArray
    version: IntArray
    key_tool: IntArray  # tool index of each key
    tool_names: list[str]
    key_names: list[str]
    cost: FloatArray  # USD per uncached call, per tool


@dataclass
class Counts:
    spend_usd: float
    stale: int
    requests: int
    hits: int

    def to_json(self) -> dict[str, Any]:
        return {
            "spend_usd": round(self.spend_usd, 6),
            "stale": self.stale,
            "requests": self.requests,
            "hits": self.hits,
        }


# -- traces ---------------------------------------------------------------------------------------


def tool_costs(rng: np.random.Generator) -> FloatArray:
    models = list(MODELS.values())
    costs = np.empty(TOOLS)
    for tool in range(TOOLS):
        price_in, price_out = models[int(rng.integers(len(models)))]
        tokens_in = math.exp(rng.uniform(math.log(200), math.log(20_000)))
        tokens_out = math.exp(rng.uniform(math.log(50), math.log(2_000)))
        tool_price = TOOL_PRICES[int(rng.integers(len(TOOL_PRICES)))]
        costs[tool] = (tokens_in * price_in + tokens_out * price_out) / 1e6 + tool_price
    return costs


def generate(family: str, seed: int, *, hours: float | None = None) -> Trace:
    """One trace of ``family``; ``hours`` cuts it short (the smoke size)."""
    world = np.random.default_rng([seed, 0])  # tools, keys, prices: the same for every family
    rng = np.random.default_rng([seed, 1 + FAMILIES.index(family)])
    key_tool = world.integers(TOOLS, size=KEYS)
    change_rate = np.exp(world.uniform(np.log(1 / DAY), np.log(1 / 60.0), size=TOOLS))
    cost = tool_costs(world)
    rank_key = world.permutation(KEYS)  # key at each popularity rank
    popularity = np.arange(1, KEYS + 1, dtype=np.float64) ** -ZIPF_S
    popularity /= popularity.sum()
    cumulative = np.cumsum(popularity)
    duration = DAYS[family] * DAY if hours is None else hours * 3600.0

    if family == "diurnal":  # 8 peak hours at 5x the night rate, 5 rps over the day
        night = MEAN_RPS * 24 / (8 * 5 + 16)
        candidates = np.sort(rng.uniform(0, duration, rng.poisson(5 * night * duration)))
        hour = (candidates % DAY) / 3600.0
        keep = rng.uniform(size=len(candidates)) < np.where((hour >= 9) & (hour < 17), 1.0, 0.2)
        t = candidates[keep]
    else:
        t = np.sort(rng.uniform(0, duration, rng.poisson(MEAN_RPS * duration)))
    ranks = np.minimum(np.searchsorted(cumulative, rng.uniform(size=len(t))), KEYS - 1)
    if family == "shifting":  # every day the ranking rotates by a third of the keys
        ranks = (ranks + (t // DAY).astype(np.int64) * (KEYS // 3)) % KEYS
    key = rank_key[ranks]
    if family == "bursty":
        extra_t, extra_k = [], []
        for _ in range(20):
            rank = min(int(np.searchsorted(cumulative, rng.uniform())), KEYS - 1)
            start = rng.uniform(0, max(duration - 600.0, 0.0))
            rate = MEAN_RPS * popularity[rank] * 49  # on top of its own: 50x in all
            count = rng.poisson(rate * min(600.0, duration - start))
            extra_t.append(rng.uniform(start, min(start + 600.0, duration), count))
            extra_k.append(np.full(count, rank_key[rank]))
        t = np.concatenate([t, *extra_t])
        key = np.concatenate([key, *extra_k])
        order = np.argsort(t, kind="stable")
        t, key = t[order], key[order]
    version = _versions(rng, t, key, change_rate[key_tool[key]])
    return _trace(t, key, version, key_tool, cost)


def _versions(rng: np.random.Generator, t: FloatArray, key: IntArray, rate: FloatArray) -> IntArray:
    """Changes of each get's key up to that get: Poisson(rate x gap) since its previous get."""
    order = np.lexsort((t, key))
    ts, ks = t[order], key[order]
    first = np.ones(len(ts), dtype=bool)
    first[1:] = ks[1:] != ks[:-1]
    gap = np.where(first, ts, np.diff(ts, prepend=0.0))
    cumulative = np.cumsum(rng.poisson(rate[order] * gap))
    version = np.empty(len(t), dtype=np.int64)
    version[order] = cumulative  # comparable within a key, which is all that is compared
    return version


def _trace(
    t: FloatArray, key: IntArray, version: IntArray, key_tool: IntArray, cost: FloatArray
) -> Trace:
    tool_names = [f"tool-{i:02d}" for i in range(len(cost))]
    key_names = [f"k{k}" for k in range(len(key_tool))]
    return Trace(
        t, key.astype(np.int64), version, key_tool.astype(np.int64), tool_names, key_names, cost
    )


def read_trace(trace_csv: Path, tools_csv: Path) -> Trace:
    """A recorded trace: TRACE.csv (t, op, tool, key) and TOOLS.csv (tool, cost_usd)."""
    with tools_csv.open(newline="", encoding="utf-8") as handle:
        prices = {row["tool"]: float(row["cost_usd"]) for row in csv.DictReader(handle)}
    tool_index = {name: i for i, name in enumerate(prices)}
    key_index: dict[tuple[str, str], int] = {}
    gets_t: list[float] = []
    gets_k: list[int] = []
    changes: list[tuple[int, float]] = []
    with trace_csv.open(newline="", encoding="utf-8") as handle:
        for line, row in enumerate(csv.DictReader(handle), start=2):
            tool = row["tool"]
            if tool not in tool_index:
                raise SystemExit(f"{trace_csv}:{line}: tool {tool!r} is not in {tools_csv}")
            k = key_index.setdefault((tool, row["key"]), len(key_index))
            if row["op"] == "get":
                gets_t.append(float(row["t"]))
                gets_k.append(k)
            elif row["op"] == "change":
                changes.append((k, float(row["t"])))
            else:
                raise SystemExit(f"{trace_csv}:{line}: op {row['op']!r} is not get or change")
    t = np.asarray(gets_t)
    if np.any(np.diff(t) < 0):
        raise SystemExit(f"{trace_csv}: t must be ascending")
    key = np.asarray(gets_k, dtype=np.int64)
    span = float(max(t.max(initial=0.0), max((c[1] for c in changes), default=0.0))) + 1.0
    change_code = np.sort(np.array([k * span + ct for k, ct in changes], dtype=np.float64))
    version = np.searchsorted(change_code, key * span + t, side="right").astype(np.int64)
    key_tool = np.empty(len(key_index), dtype=np.int64)
    for (tool, _), k in key_index.items():
        key_tool[k] = tool_index[tool]
    trace = _trace(t, key, version, key_tool, np.array(list(prices.values())))
    trace.tool_names = list(prices)
    trace.key_names = [name for (_, name) in key_index]
    return trace


# -- replay through the real cache ----------------------------------------------------------------


def replay(trace: Trace, ttls: FloatArray | None, optimiser: TtlOptimiser | None = None) -> Counts:
    """Every get through ``Cache.cached_call`` on a simulated clock, static ``ttls`` per tool or the
    optimiser's (baseline until it says otherwise); counts spend, stale responses and hits."""
    now = [0.0]
    cache = Cache(Settings(), clock=lambda: now[0])
    cached_call = cache.cached_call
    current = [0]
    missed = [False]

    def fetch() -> int:
        missed[0] = True
        return current[0]

    tool_ttl = [BASELINE_TTL] * len(trace.cost) if ttls is None else [float(x) for x in ttls]
    key_tool = trace.key_tool.tolist()
    tool_names, key_names = trace.tool_names, trace.key_names
    cache_keys = [f"{tool_names[key_tool[k]]}/{name}" for k, name in enumerate(key_names)]
    cost = trace.cost.tolist()
    fetched_at: dict[int, tuple[float, int]] = {}
    spend, stale, hits = 0.0, 0, 0
    next_reoptimise = REOPTIMISE_S
    observe_get = optimiser.observe_get if optimiser else None
    observe_fetch = optimiser.observe_fetch if optimiser else None
    for t, k, v in zip(trace.t.tolist(), trace.key.tolist(), trace.version.tolist(), strict=True):
        now[0] = t
        tool = key_tool[k]
        current[0] = v
        missed[0] = False
        got = cached_call(cache_keys[k], fetch, ttl=tool_ttl[tool], tool_name=tool_names[tool])
        if missed[0]:
            spend += cost[tool]
            if observe_fetch is not None:
                before = fetched_at.get(k)
                if before is None:
                    observe_fetch(tool_names[tool], key_names[k], t, None, None)
                else:
                    observe_fetch(tool_names[tool], key_names[k], t, t - before[0], v != before[1])
                fetched_at[k] = (t, v)
        else:
            hits += 1
            if got != v:
                stale += 1
        if observe_get is not None:
            observe_get(tool_names[tool], key_names[k], t, not missed[0])
            if t >= next_reoptimise:
                assert optimiser is not None
                choices = optimiser.recommend(t)
                tool_ttl = [
                    choices[name].ttl_s if name in choices else BASELINE_TTL for name in tool_names
                ]
                next_reoptimise = t + REOPTIMISE_S
    return Counts(spend, stale, len(trace.t), hits)


def replay_via_feed(trace: Trace) -> Counts:
    """Like ``replay`` with the optimiser, but fed the way production feeds it: a
    :class:`CacheFeed` attached to the cache (its get and fill observers, fingerprints instead of
    versions, tool prices from a price table), its ``observations()`` asked every 10 minutes.
    Equal counts to ``replay(trace, None, new_optimiser(trace))`` show the wiring loses nothing."""
    now = [0.0]
    settings = Settings(
        _env_file=None,
        cache={"default_ttl_s": BASELINE_TTL, "max_entries": 10**7},
        cost={"ttl_default_budget_s": DAY, "ttl_max_keys": 10**7},
    )
    cache = Cache(settings, clock=lambda: now[0], wall_clock=lambda: now[0])
    names = trace.tool_names
    prices = PriceTable(
        models={}, tools={n: f"{c:.9f}" for n, c in zip(names, trace.cost.tolist(), strict=True)}
    )
    feed = CacheFeed(settings, "bench", prices=prices, clock=lambda: now[0])
    feed.optimiser = new_optimiser(trace)
    feed.attach(cache)
    current, missed = [0], [False]

    def fetch() -> int:
        missed[0] = True
        return current[0]

    tool_ttl = [BASELINE_TTL] * len(names)
    key_tool = trace.key_tool.tolist()
    cache_keys = [f"{names[key_tool[k]]}/{name}" for k, name in enumerate(trace.key_names)]
    cost = trace.cost.tolist()
    spend, stale, hits = 0.0, 0, 0
    next_reoptimise = REOPTIMISE_S
    for t, k, v in zip(trace.t.tolist(), trace.key.tolist(), trace.version.tolist(), strict=True):
        now[0] = t
        tool = key_tool[k]
        current[0], missed[0] = v, False
        got = cache.cached_call(cache_keys[k], fetch, ttl=tool_ttl[tool], tool_name=names[tool])
        if missed[0]:
            spend += cost[tool]
        else:
            hits += 1
            stale += got != v
        if t >= next_reoptimise:
            chosen = {o.tool: o.ttl_s for o in feed.observations()}
            tool_ttl = [chosen.get(name, BASELINE_TTL) for name in names]
            next_reoptimise = t + REOPTIMISE_S
    return Counts(spend, stale, len(trace.t), hits)


def new_optimiser(trace: Trace) -> TtlOptimiser:
    config = OptimiserConfig(baseline_ttl_s=BASELINE_TTL, min_ttl_s=60.0, max_ttl_s=DAY)
    return TtlOptimiser(config, costs=dict(zip(trace.tool_names, trace.cost.tolist(), strict=True)))


# -- the oracle: every static TTL of the grid, exactly, with numpy ---------------------------------


def static_grid(trace: Trace, grid: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Misses and stale hits per tool (rows) for a static TTL (columns), as the cache would count."""
    order = np.lexsort((trace.t, trace.key))
    ts, ks, vs = trace.t[order], trace.key[order], trace.version[order]
    n = len(ts)
    tools = trace.key_tool[ks]
    span = float(ts.max(initial=0.0)) + float(grid.max()) + 1.0
    code = ks * span + ts
    first = np.flatnonzero(np.r_[True, ks[1:] != ks[:-1]]) if n else np.zeros(0, dtype=np.int64)
    index = np.arange(n)
    misses = np.zeros((len(trace.cost), len(grid)))
    stale = np.zeros_like(misses)
    for column, ttl in enumerate(grid):
        following = np.searchsorted(code, code + ttl, side="left")  # first get at or past expiry
        fetched = np.zeros(n, dtype=bool)
        frontier = first
        while frontier.size:
            fetched[frontier] = True
            step = following[frontier]
            inside = step < n
            step, source = step[inside], frontier[inside]
            frontier = step[ks[step] == ks[source]]
        last_fetch = np.maximum.accumulate(np.where(fetched, index, 0))
        is_stale = ~fetched & (vs != vs[last_fetch])
        misses[:, column] = np.bincount(tools[fetched], minlength=len(trace.cost))
        stale[:, column] = np.bincount(tools[is_stale], minlength=len(trace.cost))
    return misses, stale


def oracle_ttls(trace: Trace, grid: FloatArray = ORACLE_GRID) -> tuple[FloatArray, Counts]:
    """The cheapest static TTL per tool whose total stale does not exceed the baseline's."""
    misses, stale = static_grid(trace, grid)
    spend = misses * trace.cost[:, None]
    base = int(np.flatnonzero(grid == BASELINE_TTL)[0])
    allowed = np.ones_like(spend, dtype=bool)
    picks = allocate(spend, stale, allowed, float(stale[:, base].sum()))
    rows = np.arange(len(picks))
    requests = len(trace.t)
    counts = Counts(
        float(spend[rows, picks].sum()),
        int(stale[rows, picks].sum()),
        requests,
        requests - int(misses[rows, picks].sum()),
    )
    return grid[picks], counts


# -- the benchmark --------------------------------------------------------------------------------


def run_one(job: tuple[str, int, float | None]) -> dict[str, Any]:
    family, seed, hours = job
    started = time.perf_counter()
    trace = generate(family, seed, hours=hours)
    baseline = replay(trace, None)
    optimiser = replay(trace, None, new_optimiser(trace))
    ttls, predicted = oracle_ttls(trace)
    oracle = replay(trace, ttls)
    return {
        "family": family,
        "seed": seed,
        "requests": len(trace.t),
        "baseline": baseline.to_json(),
        "optimiser": optimiser.to_json(),
        "oracle": oracle.to_json(),
        "oracle_numpy_matches_cache": (predicted.stale, predicted.hits)
        == (oracle.stale, oracle.hits),
        "seconds": round(time.perf_counter() - started, 1),
    }


def _saving(run: dict[str, Any], policy: str) -> float:
    base = run["baseline"]["spend_usd"]
    return 100.0 * (1 - run[policy]["spend_usd"] / base) if base else 0.0


def measure(smoke: bool) -> Measured:
    jobs: list[tuple[str, int, float | None]] = (
        [("steady", 1, 1.0)] if smoke else [(f, s, None) for f in FAMILIES for s in SEEDS]
    )
    started = time.perf_counter()
    if len(jobs) == 1:
        runs = [run_one(jobs[0])]
    else:
        with multiprocessing.get_context("spawn").Pool(2) as pool:
            runs = pool.map(run_one, jobs, chunksize=1)
    wall = time.perf_counter() - started
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    cpu = sum(use.ru_utime + use.ru_stime for use in usage)
    for run in runs:
        run["optimiser_saving_pct"] = round(_saving(run, "optimiser"), 2)
        run["oracle_saving_pct"] = round(_saving(run, "oracle"), 2)
        run["stale_vs_baseline"] = run["optimiser"]["stale"] - run["baseline"]["stale"]
        run["meets_target"] = (
            run["optimiser_saving_pct"] >= TARGET_SAVING and run["stale_vs_baseline"] <= 0
        )
        print(
            f"{run['family']:>8} seed {run['seed']}: optimiser {run['optimiser_saving_pct']:6.2f} % "
            f"less spend (oracle {run['oracle_saving_pct']:6.2f} %), stale "
            f"{run['optimiser']['stale']} vs {run['baseline']['stale']} (oracle "
            f"{run['oracle']['stale']}), {run['seconds']} s",
            file=sys.stderr,
        )
    savings = [run["optimiser_saving_pct"] for run in runs]
    worst = min(runs, key=lambda run: run["optimiser_saving_pct"])
    gaps = [run["oracle_saving_pct"] - run["optimiser_saving_pct"] for run in runs]
    all_met = all(run["meets_target"] for run in runs)
    within_stale = all(run["stale_vs_baseline"] <= 0 for run in runs)
    figures = [
        Figure("optimiser_saving_mean_pct", float(np.mean(savings)), "%", TARGET_SAVING, True),
        Figure(
            "optimiser_saving_worst_pct",
            float(worst["optimiser_saving_pct"]),
            "%",
            TARGET_SAVING,
            True,
            reference=float(worst["oracle_saving_pct"]),
            reference_label="oracle",
        ),
        Figure("gap_to_oracle_mean_pct_points", float(np.mean(gaps)), "pp"),
        Figure("stale_within_baseline_every_trace", float(within_stale), "yes/no", 1.0, True),
        Figure("target_met_every_trace", float(all_met), "yes/no", 1.0, True),
        Figure("wall_time_s", wall, "s"),
        Figure("cpu_time_s", cpu, "s"),
    ]
    parameters = {
        "families": sorted({run["family"] for run in runs}),
        "seeds": sorted({run["seed"] for run in runs}),
        "tools": TOOLS,
        "keys": KEYS,
        "zipf_s": ZIPF_S,
        "mean_rps": MEAN_RPS,
        "baseline_ttl_s": BASELINE_TTL,
        "optimiser": {**OptimiserConfig().__dict__, "reoptimise_every_s": REOPTIMISE_S},
        "oracle_grid_s": [round(float(x), 1) for x in ORACLE_GRID],
        "cache_max_entries": Settings().cache.max_entries,
        "smoke_hours": 1.0 if smoke else None,
        "worst_trace": f"{worst['family']} seed {worst['seed']}",
        "runs": runs,
    }
    return Measured(figures, parameters)


def replay_files(trace_csv: Path, tools_csv: Path) -> dict[str, Any]:
    trace = read_trace(trace_csv, tools_csv)
    ttls, _ = oracle_ttls(trace)
    return {
        "baseline": replay(trace, None).to_json(),
        "optimiser": replay(trace, None, new_optimiser(trace)).to_json(),
        "oracle": replay(trace, ttls).to_json(),
    }


README_MARKERS = ("<!-- cost:start -->", "<!-- cost:end -->")


def trace_table(document: dict[str, Any]) -> str:
    """One README row per trace of a full run: spend and stale against the baseline, the oracle."""
    lines = [
        "| trace | seed | requests | optimiser spend vs baseline | oracle spend vs baseline "
        "| stale: optimiser / baseline / oracle | met? |",
        "|---|---|---|---|---|---|---|",
    ]
    for run in document["parameters"]["runs"]:
        stale = " / ".join(f"{run[p]['stale']:,}" for p in ("optimiser", "baseline", "oracle"))
        lines.append(
            f"| {run['family']} | {run['seed']} | {run['requests']:,} "
            f"| -{run['optimiser_saving_pct']:.1f} % | -{run['oracle_saving_pct']:.1f} % "
            f"| {stale} | {'yes' if run['meets_target'] else '**no**'} |"
        )
    figures = {figure["name"]: figure["value"] for figure in document["figures"]}
    lines += [
        "",
        f"Commit {document.get('commit')}, {document.get('timestamp')}: the whole run took "
        f"{figures['wall_time_s']:.0f} s on 2 processes ({figures['cpu_time_s']:.0f} s of CPU).",
    ]
    return "\n".join(lines)


def write_readme_table(readme: Path, results: Path) -> None:
    table = trace_table(json.loads(results.read_text(encoding="utf-8")))
    text = readme.read_text(encoding="utf-8")
    updated = rewrite(text, table, README_MARKERS)
    if updated is None:
        print(f"{readme}: no {README_MARKERS[0]} section; the table:\n\n{table}")
    elif updated != text:
        readme.write_text(updated, encoding="utf-8")
        print(f"updated the cost table in {readme}")


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if "--readme-table" in args:
        parser = argparse.ArgumentParser(prog="bench/cost.py --readme-table")
        parser.add_argument("--readme-table", action="store_true", required=True)
        parser.add_argument("--readme", type=Path, default=_harness.ROOT / "README.md")
        parser.add_argument("--results", type=Path, default=_harness.RESULTS_DIR / "cost.json")
        options = parser.parse_args(args)
        write_readme_table(options.readme, options.results)
        return
    if "--replay" in args:
        parser = argparse.ArgumentParser(prog="bench/cost.py --replay", description=__doc__)
        parser.add_argument("--replay", type=Path, required=True, metavar="TRACE.csv")
        parser.add_argument("--tools", type=Path, required=True, metavar="TOOLS.csv")
        options = parser.parse_args(args)
        print(json.dumps(replay_files(options.replay, options.tools)))
        return
    _harness.main(NAME, "Per-tool cache TTLs: spend and stale responses", measure, args)


if __name__ == "__main__":
    main()
