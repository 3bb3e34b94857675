"""Performance baseline (3 scenarios): introspect p99, query p99, stream latency, against the SLO.

Samples are taken one after another from the process running the suite, so the figures include
its network path to the API: run it where M1's clients run. Introspections and queries share
the API's ``query`` rate-limit class; a 429 ends the sampling, and fewer than 5 samples is a warn
(the limit, not the latency, answered).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from m1lib.errors import RateLimitedError
from m1lib.ops.validation.api_scenarios import PROBE_QUERY, open_stream
from m1lib.ops.validation.scenario import (
    Context,
    Outcome,
    Scenario,
    Status,
    needs_key,
    p99,
    timed_ms,
)
from m1lib.ops.validation.security_scenarios import issue_probe_token

__all__ = ["SCENARIOS"]

_MIN_SAMPLES: Final = 5


def _sampled(context: Context, call: Callable[[], object], target_ms: float, what: str) -> Outcome:
    samples: list[float] = []
    limited = False
    for _ in range(context.slo.performance.samples):
        try:
            samples.append(timed_ms(call))
        except RateLimitedError:
            limited = True
            break
    if len(samples) < _MIN_SAMPLES:
        return Outcome(
            Status.WARN,
            f"{len(samples)} sample(s)",
            f"<= {target_ms:g} ms",
            "rate limited before enough samples: run it again in a minute",
        )
    outcome = Outcome.graded(
        p99(samples), target_ms, context.slo.warn_at, unit="ms",
        what=f"p99 of {len(samples)} {what}" + (" (rate limited)" if limited else ""),
    )  # fmt: skip
    return outcome


def introspect_p99(context: Context) -> Outcome:
    skipped = needs_key(context)
    if skipped is not None:
        return skipped
    token = issue_probe_token(context).token
    api = context.api(max_wait_s=0)
    return _sampled(
        context,
        lambda: api.post_json("/api/m1/tokens/introspect", {"token": token}),
        context.slo.performance.introspect_p99_ms,
        "introspections",
    )


def query_p99(context: Context) -> Outcome:
    skipped = needs_key(context)
    if skipped is not None:
        return skipped
    api = context.api(max_wait_s=0)
    return _sampled(
        context, lambda: api.query(PROBE_QUERY), context.slo.performance.query_p99_ms, "queries"
    )


def stream_p99(context: Context) -> Outcome:
    skipped = needs_key(context)
    if skipped is not None:
        return skipped
    slo = context.slo.performance
    samples: list[float] = []
    with open_stream(context) as probe:
        for _ in range(slo.stream_samples):
            ms = probe.round_trip(slo.stream_p99_ms)
            if ms is None:
                return Outcome(
                    Status.FAIL,
                    f"an event not delivered in {slo.stream_p99_ms * 4:g} ms",
                    f"<= {slo.stream_p99_ms:g} ms",
                )
            samples.append(ms)
    return Outcome.graded(
        p99(samples), slo.stream_p99_ms, context.slo.warn_at, unit="ms",
        what=f"p99 of {len(samples)} events recorded -> on the stream",
    )  # fmt: skip


SCENARIOS: Final[list[Scenario]] = [
    Scenario("performance.introspect_p99", "performance", "introspect p99", introspect_p99),
    Scenario("performance.query_p99", "performance", "query p99", query_p99),
    Scenario("performance.stream_p99", "performance", "stream latency p99", stream_p99),
]
