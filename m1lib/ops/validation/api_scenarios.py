"""API (4 scenarios): live, ready, a query answered, the stream delivers an event within 1 s.

The stream probe opens ``GET /api/m1/dashboard/stream?types=error_alert``, records one marked
``error_alerts`` event (level warning, source ``m1-validation-probe``, a nonce in its message)
through ``POST /api/m1/events`` and times it from the POST to its arrival on the stream. The
probe alert is visible on the dashboard as such; it is the suite's only lasting trace there.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

from m1lib.client import ApiClient
from m1lib.errors import M1Error
from m1lib.ops.validation.scenario import (
    PROBE_SOURCE,
    Context,
    Outcome,
    Scenario,
    Status,
    needs_key,
    timed_ms,
)

__all__ = ["SCENARIOS", "StreamProbe", "open_stream"]

STREAM_ROUTE: Final = "/api/m1/dashboard/stream"
PROBE_QUERY: Final = {"metric": "policy_decisions", "timeRange": "5m", "aggregations": ["count"]}


class StreamProbe:
    """An open stream of ``error_alert`` events and the client that records probe alerts."""

    def __init__(self, lines: Iterator[str], api: ApiClient) -> None:
        self._lines = lines
        self._api = api

    def wait_open(self) -> None:
        """Until the stream's first line (``retry:``): the replica has registered the client."""
        for line in self._lines:
            if line.startswith("retry:"):
                return

    def round_trip(self, limit_ms: float) -> float | None:
        """Record a probe alert; ms from the POST to its arrival, None if not seen in 4x
        ``limit_ms`` (a silent stream raises ``httpx.ReadTimeout`` on its own)."""
        nonce = uuid.uuid4().hex
        event = {
            "metric": "error_alerts",
            "level": "warning",
            "source": PROBE_SOURCE,
            "message": f"production-validation probe {nonce} (ignore)",
        }
        sent: dict[str, float] = {}
        failed: list[M1Error] = []

        def post() -> None:
            sent["at"] = time.perf_counter()
            try:
                self._api.record_events([event])
            except M1Error as error:
                failed.append(error)

        poster = threading.Thread(target=post, daemon=True)
        poster.start()
        deadline = time.perf_counter() + limit_ms * 4 / 1000.0
        arrived: float | None = None
        for line in self._lines:
            if nonce in line:
                arrived = time.perf_counter()
                break
            if failed or time.perf_counter() > deadline:
                break
        poster.join(10)
        if failed:
            raise failed[0]
        if arrived is None:
            return None
        return (arrived - sent["at"]) * 1000.0


@contextmanager
def open_stream(context: Context) -> Iterator[StreamProbe]:
    api = context.api()
    read_timeout_s = max(2.0, context.slo.api.stream_delivery_ms * 4 / 1000.0)
    with api.stream(
        STREAM_ROUTE, params={"types": "error_alert"}, read_timeout_s=read_timeout_s
    ) as response:
        probe = StreamProbe(response.iter_lines(), api)
        probe.wait_open()
        yield probe


def live(context: Context) -> Outcome:
    response = context.api(authenticated=False).request("GET", "/health/live")
    return Outcome(Status.PASS, f"{response.status_code}", "200")


def ready(context: Context) -> Outcome:
    """503 raises ``UnavailableError`` (the runner's fail, with the replica's reason)."""
    response = context.api(authenticated=False).request("GET", "/health/ready")
    return Outcome(Status.PASS, f"{response.status_code}", "200")


def query(context: Context) -> Outcome:
    skipped = needs_key(context)
    if skipped is not None:
        return skipped
    answer: dict[str, object] = {}

    def ask() -> None:
        answer.update(context.api().query(PROBE_QUERY))

    ms = timed_ms(ask)
    rows = answer.get("rows")
    if not isinstance(rows, list):
        return Outcome(Status.FAIL, "no rows in the answer", "an answer with rows")
    return Outcome(Status.PASS, f"{len(rows)} row(s) in {ms:.0f} ms", "an answer with rows")


def stream(context: Context) -> Outcome:
    skipped = needs_key(context)
    if skipped is not None:
        return skipped
    limit = context.slo.api.stream_delivery_ms
    with open_stream(context) as probe:
        ms = probe.round_trip(limit)
    if ms is None:
        return Outcome(Status.FAIL, f"not delivered in {limit * 4:g} ms", f"<= {limit:g} ms")
    status = Status.PASS if ms <= limit else Status.FAIL
    return Outcome(status, f"{ms:.1f} ms", f"<= {limit:g} ms", "event recorded -> on the stream")


SCENARIOS: Final[list[Scenario]] = [
    Scenario("api.live", "api", "liveness", live),
    Scenario("api.ready", "api", "readiness", ready),
    Scenario("api.query", "api", "a query answered", query),
    Scenario("api.stream", "api", "stream delivers an event", stream),
]
