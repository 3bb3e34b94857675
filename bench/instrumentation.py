"""Instrumentation: what ``m1lib.cached_call`` and ``m1lib.tool_call`` add to the call they wrap.

Everything is in one process as a service would run it: a started in-memory metrics runtime is
the process default (its ingest thread drains the events the calls queue), the policy engine is
the process default (HS256, nothing revoked) and the process cache is memory only, recording
into the runtime. Side by side, in one run:

- ``cached_call`` on a hit, memory backend: ``m1lib.cached_call(tool, key, fn)`` against the bare
  ``Cache.cached_call(key, fn)`` of a cache that records nothing. Target: at most 2 us added.
- ``tool_call``: ``with m1lib.tool_call(tool, scope, token=..., subject=...): fn()`` against the
  bare call it stands for, ``engine.verify(...)`` then ``fn()``. Both pay the same verify (tens of
  us, the policy engine's cost, see bench/revocation.py), whose jitter would drown a difference of
  a microsecond: so the added cost is measured with an engine whose verify hands back the real
  engine's decision at once, in both arms. The real verify + call and the real tool_call are
  reported beside it, and their paired difference (``tool_call_added_real_us``): it is larger,
  because between two verifies (which allocate and touch much memory) the event's queue append
  costs more than in a tight loop (cache misses), as the engine's own decision event does.
  Target: at most 2 us added.
- ``record_cost``: ``m1lib.record_cost(model, in, out, tool_name=..., component=...)`` (price it
  exactly, record a ``cost_updates`` event) against an empty loop: the whole call is what recording
  a cost costs. And ``call.cost(model, in, out)`` on an entered ``tool_call`` handle, the same way.
  Target: at most 2 us each.

Each sample is a batch of calls; bare and instrumented batches alternate, so background load hits
both alike, and the added cost is the median of the paired per-call differences. The targets are
on the caller's thread's CPU time (``time.thread_time``): what the hot path pays, unmoved by other
processes on a busy machine. Wall-clock differences are reported beside them (``*_wall_us``): they
also hold the ingest thread's share of the GIL for the events the instrumented arm records.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import _harness
from _harness import Figure, Measured

import m1lib
from m1lib import process_cache, process_engine
from m1lib.cache import Cache
from m1lib.metrics import MetricsRuntime, install_default
from m1lib.ops.cost import prices
from m1lib.policy import PolicyDecision, PolicyEngine, Reason, Scope
from m1lib.settings import Settings
from m1lib.tokens import TokenCodec

NAME = "instrumentation"
SECRET = "bench-secret-" + "x" * 40
TOOL, SCOPE, SUBJECT = "log_agent_run", Scope.WRITE, "agent-1"
BATCH = 200


class NothingRevoked:
    """The revocation check of a fresh replica with nothing revoked (no threads, no I/O)."""

    def denial(self, claims: Mapping[str, Any]) -> Reason | None:
        return None


def measure(smoke: bool) -> Measured:
    size = {"batches": 200 if smoke else 5_000, "batch_calls": BATCH}
    with tempfile.TemporaryDirectory(prefix="m1-bench-") as tmp:
        settings = Settings(_env_file=None, data_dir=Path(tmp) / "data", jwt={"secret": SECRET})
        metrics = MetricsRuntime(settings, replica_id="bench")
        metrics.start()
        previous_metrics = install_default(metrics)
        engine = PolicyEngine(
            settings=settings,
            codec=TokenCodec.from_settings(settings),
            revocation=NothingRevoked(),
            recorder=metrics.recorder.policy_decision_sink(),
        )
        previous_engine = process_engine.install_engine(engine)
        cache = Cache(settings, recorder=metrics.recorder.record_trusted)
        previous_cache = process_cache.install_cache(cache)
        previous_prices = prices.install_prices(prices.load_prices())  # the built-in table
        try:
            cached = cached_call_costs(settings, size["batches"])
            tools = tool_call_costs(engine, size["batches"])
            costs = record_cost_costs(engine, size["batches"])
            dropped = metrics.dropped_events
        finally:
            prices.install_prices(previous_prices)
            process_cache.install_cache(previous_cache)
            process_engine.install_engine(previous_engine)
            install_default(previous_metrics)
            metrics.close()
    figures = [
        Figure("cached_call_hit_bare_us", round(cached["bare"], 3), "us"),
        Figure(
            "cached_call_hit_us",
            round(cached["instrumented"], 3),
            "us",
            reference=round(cached["bare"], 3),
            reference_label="bare Cache.cached_call, us",
        ),
        Figure("cached_call_added_us", round(cached["added"], 3), "us", target=2.0),
        Figure("cached_call_added_wall_us", round(cached["added_wall"], 3), "us"),
        Figure("tool_call_bare_us", round(tools["bare"], 3), "us"),
        Figure(
            "tool_call_us",
            round(tools["instrumented"], 3),
            "us",
            reference=round(tools["bare"], 3),
            reference_label="verify + call, us (real engine)",
        ),
        Figure("tool_call_added_us", round(tools["added"], 3), "us", target=2.0),
        Figure("tool_call_added_wall_us", round(tools["added_wall"], 3), "us"),
        Figure("tool_call_added_real_us", round(tools["added_real"], 3), "us"),
        Figure("record_cost_us", round(costs["record"]["added"], 3), "us", target=2.0),
        Figure("record_cost_wall_us", round(costs["record"]["added_wall"], 3), "us"),
        Figure("tool_call_cost_us", round(costs["handle"]["added"], 3), "us", target=2.0),
        Figure("tool_call_cost_wall_us", round(costs["handle"]["added_wall"], 3), "us"),
    ]
    return Measured(figures=figures, parameters={**size, "dropped_events": dropped})


def paired(
    bare: Callable[[], None], instrumented: Callable[[], None], batches: int
) -> dict[str, float]:
    """Median per-call wall time of each, and the medians of their paired differences in the
    calling thread's CPU time ("added") and in wall time ("added_wall"), in us."""
    wall: dict[str, list[float]] = {"bare": [], "instrumented": []}
    cpu: dict[str, list[float]] = {"bare": [], "instrumented": []}
    for _ in range(batches):
        for name, run in (("bare", bare), ("instrumented", instrumented)):
            began_cpu, began = time.thread_time(), time.perf_counter()
            run()
            wall[name].append((time.perf_counter() - began) / BATCH * 1e6)
            cpu[name].append((time.thread_time() - began_cpu) / BATCH * 1e6)

    def added(samples: dict[str, list[float]]) -> float:
        pairs = zip(samples["instrumented"], samples["bare"], strict=True)
        return statistics.median(i - b for i, b in pairs)

    return {
        "bare": statistics.median(wall["bare"]),
        "instrumented": statistics.median(wall["instrumented"]),
        "added": added(cpu),
        "added_wall": added(wall),
    }


def cached_call_costs(settings: Settings, batches: int) -> dict[str, float]:
    plain = Cache(settings)  # records nothing: the bare call
    value = {"hits": [1, 2, 3]}

    def load() -> Any:
        return value

    plain.cached_call("bare-key", load)
    m1lib.cached_call(TOOL, "key", load)
    bare_call, call = plain.cached_call, m1lib.cached_call

    def bare() -> None:
        for _ in range(BATCH):
            bare_call("bare-key", load)

    def instrumented() -> None:
        for _ in range(BATCH):
            call(TOOL, "key", load)

    return paired(bare, instrumented, batches)


class FixedDecision:
    """An engine whose verify answers one precomputed decision: the same cost in both arms."""

    def __init__(self, decision: PolicyDecision) -> None:
        self.decision = decision

    def verify(
        self, token: str | None, tool_name: str, scope: Scope, *, subject: str | None = None
    ) -> PolicyDecision:
        return self.decision


def tool_call_costs(engine: PolicyEngine, batches: int) -> dict[str, float]:
    token = engine.issue_token(TOOL, SCOPE, subject=SUBJECT)
    decision = engine.verify(token, TOOL, SCOPE, subject=SUBJECT)
    if not decision.allowed:
        raise RuntimeError("the benchmark's token was denied")
    tool_call = m1lib.tool_call

    def work() -> int:
        return 1

    def arms(verify: Callable[..., PolicyDecision]) -> tuple[Callable[[], None], ...]:
        def bare() -> None:
            for _ in range(BATCH):
                if verify(token, TOOL, SCOPE, subject=SUBJECT).allowed:
                    work()

        def instrumented() -> None:
            for _ in range(BATCH):
                with tool_call(TOOL, SCOPE, token=token, subject=SUBJECT):
                    work()

        return bare, instrumented

    real = paired(*arms(engine.verify), max(1, batches // 5))
    fixed = FixedDecision(decision)
    process_engine.install_engine(fixed)  # type: ignore[arg-type]  # verify is all tool_call uses
    try:
        added = paired(*arms(fixed.verify), batches)
    finally:
        process_engine.install_engine(engine)
    return {
        **added,
        "bare": real["bare"],
        "instrumented": real["instrumented"],
        "added_real": real["added"],
    }


def record_cost_costs(engine: PolicyEngine, batches: int) -> dict[str, dict[str, float]]:
    """``record_cost`` and ``tool_call(...).cost`` per call, each against an empty loop."""
    record_cost = m1lib.record_cost
    model, tokens_in, tokens_out = "claude-sonnet-4-5", 1234, 567

    def empty() -> None:
        for _ in range(BATCH):
            pass

    def recorded() -> None:
        for _ in range(BATCH):
            record_cost(model, tokens_in, tokens_out, tool_name=TOOL, component="bench")

    token = engine.issue_token(TOOL, SCOPE, subject=SUBJECT)
    with m1lib.tool_call(TOOL, SCOPE, token=token, subject=SUBJECT, component="bench") as call:
        cost = call.cost

        def handle() -> None:
            for _ in range(BATCH):
                cost(model, tokens_in, tokens_out)

        return {
            "record": paired(empty, recorded, batches),
            "handle": paired(empty, handle, batches),
        }


if __name__ == "__main__":
    _harness.main(NAME, (__doc__ or "").strip().splitlines()[0], measure)
