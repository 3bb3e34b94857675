"""Recording: validation names metric, field and what is allowed; a full queue drops and counts."""

from __future__ import annotations

import math
import threading
import time
from datetime import UTC, datetime, timedelta, timezone
from enum import StrEnum
from typing import Any

import numpy as np
import pytest

from m1lib.errors import InputError
from m1lib.metrics.engine import execute
from m1lib.metrics.plan import Limits
from m1lib.metrics.query import parse_query
from m1lib.metrics.recorder import Recorder
from m1lib.metrics.schema import FLOAT_LIMIT, INT_LIMIT, METRICS
from m1lib.metrics.sketch import RELATIVE_ERROR
from m1lib.metrics.store import EventStore
from tests.m1lib.metrics.factories import NOW_S

NUMBER = "a number from -4e+17 to 4e+17"
HEALTH: dict[str, Any] = {"component": "db", "status": "healthy", "latencyMs": 2.5}
DECISION: dict[str, Any] = {"toolName": "web_search", "scope": "read", "allowed": True, "reason": "ok",
                            "subject": "agent-1", "checkMs": 0.25}  # fmt: skip


def make_recorder(queue_size: int = 1000) -> Recorder:
    return Recorder(EventStore(), replica_id="r1", queue_size=queue_size)


def count(recorder: Recorder, metric: str = "policy_decisions") -> int:
    query = parse_query({"metric": metric, "timeRange": "1h"})
    result = execute(query, recorder.store.snapshot(metric), Limits())
    return int(result.rows[0]["count"]) if result.rows else 0


@pytest.mark.parametrize(
    ("fields", "path", "allowed"),
    [
        ({**DECISION, "checkMs": "fast"}, "policy_decisions.checkMs", [NUMBER]),
        ({**DECISION, "allowed": "yes"}, "policy_decisions.allowed", ["true or false"]),
        ({**DECISION, "scope": "admin"}, "policy_decisions.scope", ["read", "write", "execute"]),
        ({**DECISION, "checkMs": math.nan}, "policy_decisions.checkMs", [NUMBER]),
        ({**DECISION, "checkMs": math.inf}, "policy_decisions.checkMs", [NUMBER]),
        ({**DECISION, "toolName": None}, "policy_decisions.toolName", ["a string"]),
        ({k: v for k, v in DECISION.items() if k != "subject"}, "policy_decisions.subject", ["a string"]),
        ({**DECISION, "colour": "red"}, "policy_decisions.colour",
         ["toolName", "scope", "allowed", "reason", "subject", "checkMs"]),
        ({**DECISION, "replica": "me"}, "policy_decisions.replica",
         ["toolName", "scope", "allowed", "reason", "subject", "checkMs"]),
        ({**DECISION, "toolName": "x" * 2001}, "policy_decisions.toolName", ["at most 2000"]),
    ],
)  # fmt: skip
def test_record_event_rejects_bad_fields_naming_metric_field_and_allowed(
    fields: dict[str, Any], path: str, allowed: list[str]
) -> None:
    recorder = make_recorder()
    with pytest.raises(InputError) as caught:
        recorder.record_event("policy_decisions", **fields)
    assert caught.value.path == path
    assert caught.value.allowed == allowed
    assert recorder.queued == 0


def test_unknown_metric_lists_the_metrics() -> None:
    with pytest.raises(InputError) as caught:
        make_recorder().record_event("policy_decision", **DECISION)
    assert caught.value.path == "metric"
    assert "policy_decisions" in caught.value.allowed


def test_wrong_typed_integer_and_coercions() -> None:
    recorder = make_recorder()
    cost = {"model": "m", "toolName": "t", "component": "c", "outputTokens": 2, "costUsd": 1}
    recorder.record_event("cost_updates", inputTokens=3.0, **cost)  # integral float: accepted
    recorder.record_event("cost_updates", inputTokens=np.int64(4), **cost)
    with pytest.raises(InputError, match=r"cost_updates\.inputTokens: 3\.5 is not an integer"):
        recorder.record_event("cost_updates", inputTokens=3.5, **cost)
    with pytest.raises(InputError, match=r"cost_updates\.inputTokens: True is bool"):
        recorder.record_event("cost_updates", inputTokens=True, **cost)
    recorder.ingest_pending()
    result = execute(parse_query({"metric": "cost_updates", "timeRange": "1h",
                                  "aggregations": [{"op": "sum", "field": "inputTokens"}]}),
                     recorder.store.snapshot("cost_updates"), Limits())  # fmt: skip
    assert result.rows == [{"sum": 7}]


def test_optional_fields_may_be_missing_or_null() -> None:
    recorder = make_recorder()
    run = {"toolName": "t", "scope": "read", "success": True, "durationMs": 1.0}
    recorder.record_event("tool_executions", **run)
    recorder.record_event("tool_executions", error=None, **run)
    recorder.record_event("tool_executions", error="boom", **{**run, "success": False})
    recorder.ingest_pending()
    assert count(recorder, "tool_executions") == 3


def test_timestamps_accept_aware_datetimes_and_epoch_seconds_only() -> None:
    recorder = Recorder(EventStore(clock=lambda: NOW_S), replica_id="r1")
    moment = datetime.fromtimestamp(NOW_S - 60, UTC)
    recorder.record_event("policy_decisions", timestamp=moment, **DECISION)
    recorder.record_event(
        "policy_decisions", timestamp=moment.astimezone(timezone(timedelta(hours=5))), **DECISION
    )
    recorder.record_event("policy_decisions", timestamp=NOW_S - 30, **DECISION)
    with pytest.raises(InputError) as caught:
        recorder.record_event("policy_decisions", timestamp=datetime(2026, 1, 1), **DECISION)
    assert caught.value.path == "policy_decisions.timestamp"
    with pytest.raises(InputError):
        recorder.record_event("policy_decisions", timestamp="yesterday", **DECISION)
    recorder.ingest_pending()
    result = execute(parse_query({"metric": "policy_decisions", "timeRange": "5m", "interval": "1m"}),
                     recorder.store.snapshot("policy_decisions"), Limits())  # fmt: skip
    minute = int((NOW_S - 60) // 60 * 60)
    assert sum(row["count"] for row in result.rows) == 3
    assert result.rows[0]["bucket"] == datetime.fromtimestamp(minute, UTC)


def test_record_events_validates_all_before_queueing_any() -> None:
    recorder = make_recorder()
    good = {"metric": "policy_decisions", **DECISION}
    with pytest.raises(InputError) as caught:
        recorder.record_events([good, good, {**good, "checkMs": "x"}])
    assert caught.value.path == "events[2].checkMs"
    with pytest.raises(InputError) as caught:
        recorder.record_events([good, {"metric": "nope"}])
    assert caught.value.path == "events[1].metric"
    with pytest.raises(InputError) as caught:
        recorder.record_events([good, "not an event"])  # type: ignore[list-item]
    assert caught.value.path == "events[1]"
    assert recorder.queued == 0
    assert (
        recorder.record_events(
            [good, {**good, "timestamp": NOW_S - 1}, {**good, "timestamp": None}]
        )
        == 3
    )


def test_a_full_queue_drops_and_counts_and_never_blocks() -> None:
    recorder = make_recorder(queue_size=100)  # no ingest thread: nothing drains the queue
    finished = threading.Event()

    def flood() -> None:
        for _ in range(250):
            recorder.record_event("policy_decisions", **DECISION)
        recorder.record_events([{"metric": "policy_decisions", **DECISION}] * 50)
        finished.set()

    worker = threading.Thread(target=flood)
    worker.start()
    assert finished.wait(30), "recording blocked on a full queue"
    worker.join()
    assert recorder.queued == 100
    assert recorder.dropped_events == 200
    recorder.ingest_pending()
    assert count(recorder) == 100
    assert recorder.record_events([{"metric": "policy_decisions", **DECISION}] * 150) == 100
    assert recorder.dropped_events == 250


def test_the_ingest_thread_moves_events_into_the_store_and_flush_waits_for_it() -> None:
    recorder = make_recorder(queue_size=100_000)
    batches: list[int] = []
    recorder.on_batch = lambda batch: batches.append(sum(chunk.size for _, chunk in batch))
    recorder.start()
    try:
        for _ in range(500):
            recorder.record_event("policy_decisions", **DECISION)
        assert recorder.record_events([{"metric": "policy_decisions", **DECISION}] * 700) == 700
        assert recorder.flush(10)
        assert recorder.queued == 0
        assert recorder.lag_s == 0.0
        assert count(recorder) == 1200
        assert sum(batches) == 1200
    finally:
        recorder.close()
    assert not recorder.running


def test_a_failing_batch_handler_counts_the_batch_as_dropped_and_keeps_going() -> None:
    recorder = make_recorder()

    def broken(_batch: object) -> None:
        raise RuntimeError("downstream bug")

    recorder.on_batch = broken
    recorder.record_event("policy_decisions", **DECISION)
    assert recorder.ingest_pending() == 1
    assert recorder.dropped_events == 1
    recorder.on_batch = None
    recorder.record_event("policy_decisions", **DECISION)
    recorder.ingest_pending()
    assert count(recorder) == 2  # the first batch reached the store before the handler failed


class Scope(StrEnum):
    READ = "read"
    ADMIN = "admin"


def test_str_enum_members_are_stored_as_plain_text() -> None:
    recorder = make_recorder()
    recorder.record_event("policy_decisions", **{**DECISION, "scope": Scope.READ})
    with pytest.raises(InputError) as caught:
        recorder.record_event("policy_decisions", **{**DECISION, "scope": Scope.ADMIN})
    assert caught.value.allowed == ["read", "write", "execute"]
    recorder.ingest_pending()
    (value,) = recorder.store.snapshot("policy_decisions").dictionaries["scope"].values
    assert type(value) is str


def test_trusted_values_skip_validation_and_a_wrong_tuple_is_dropped_and_counted() -> None:
    recorder = make_recorder()
    values = tuple(DECISION[f.name] for f in METRICS["policy_decisions"].declared)
    recorder.record_trusted("policy_decisions", values)
    recorder.record_trusted(
        "policy_decisions", values, timestamp_us=time.time_ns() // 1000 - 5_000_000
    )
    assert recorder.ingest_pending() == 2
    assert count(recorder) == 2
    recorder.record_trusted("policy_decisions", values[:-1])  # a bug in the caller: one value short
    recorder.ingest_pending()
    assert recorder.dropped_events == 1
    assert count(recorder) == 2


# -- what storage can hold: validation refuses the rest, naming the field and the range ------------

COST: dict[str, Any] = {"model": "m", "toolName": "t", "component": "c", "inputTokens": 3,
                        "outputTokens": 2, "costUsd": 0.5}  # fmt: skip
INTEGER = f"an integer from {-INT_LIMIT} to {INT_LIMIT}"
GOOD = {"policy_decisions": DECISION, "cost_updates": COST, "health_checks": HEALTH}


def record_one(recorder: Recorder, metric: str, fields: dict[str, Any], batch: bool) -> None:
    """One event through record_events (after three good ones) or through record_event."""
    if batch:
        good = {"metric": metric, **GOOD[metric]}
        recorder.record_events([good] * 3 + [{"metric": metric, **fields}])
    else:
        recorder.record_event(metric, **fields)


def aggregate(
    recorder: Recorder, metric: str, field: str, *, exact: bool = False
) -> dict[str, Any]:
    query = {"metric": metric, "timeRange": "1h", "field": field, "exact": exact,
             "aggregations": ["count", "sum", "min", "max", "variance", "p50"]}  # fmt: skip
    result = execute(parse_query(query), recorder.store.snapshot(metric), Limits())
    return result.rows[0] if result.rows else {}


@pytest.mark.parametrize("value", [2**63, -(2**63) - 1, 2**63 - 1, INT_LIMIT + 1, -INT_LIMIT - 1,
                                   pytest.param(10**400, id="10**400"), 1e300])  # fmt: skip
@pytest.mark.parametrize("batch", [False, True])
def test_integers_beyond_what_rollups_hold_exactly_are_refused(value: Any, batch: bool) -> None:
    recorder = make_recorder()
    with pytest.raises(InputError) as caught:
        record_one(recorder, "cost_updates", {**COST, "inputTokens": value}, batch)
    assert caught.value.path == ("events[3].inputTokens" if batch else "cost_updates.inputTokens")
    assert caught.value.allowed == [INTEGER]
    assert recorder.queued == 0


def test_integers_up_to_the_limit_come_back_exactly() -> None:
    recorder = make_recorder()
    recorder.record_event("cost_updates", **{**COST, "inputTokens": INT_LIMIT})
    recorder.record_events([{"metric": "cost_updates", **COST, "inputTokens": -INT_LIMIT}])
    recorder.record_event("cost_updates", **{**COST, "inputTokens": np.int64(INT_LIMIT)})
    recorder.ingest_pending()
    for exact in (False, True):
        row = aggregate(recorder, "cost_updates", "inputTokens", exact=exact)
        assert (row["min"], row["max"], row["sum"]) == (-INT_LIMIT, INT_LIMIT, INT_LIMIT)


@pytest.mark.parametrize("value", [1e308, -1e308, 1e200, 4.01e17, math.nextafter(FLOAT_LIMIT, math.inf),
                                   pytest.param(10**400, id="10**400"), 10**18])  # fmt: skip
@pytest.mark.parametrize("batch", [False, True])
def test_floats_beyond_what_sums_m2_and_the_sketch_hold_are_refused(
    value: Any, batch: bool
) -> None:
    recorder = make_recorder()
    with pytest.raises(InputError) as caught:
        record_one(recorder, "policy_decisions", {**DECISION, "checkMs": value}, batch)
    assert caught.value.path == ("events[3].checkMs" if batch else "policy_decisions.checkMs")
    assert caught.value.problem.endswith("is out of range")
    assert caught.value.allowed == [NUMBER]
    assert recorder.queued == 0


def test_floats_at_the_limit_keep_finite_sums_and_variances_and_the_percentile_bound() -> None:
    recorder = make_recorder(queue_size=10_000)
    mixed = [FLOAT_LIMIT, -FLOAT_LIMIT, FLOAT_LIMIT / 3, -FLOAT_LIMIT] * 1000
    high = [FLOAT_LIMIT, FLOAT_LIMIT * 0.97, FLOAT_LIMIT / 3, FLOAT_LIMIT * 0.5] * 1000
    recorder.record_events([{**HEALTH, "metric": "health_checks", "latencyMs": v} for v in mixed])
    recorder.record_events([{**HEALTH, "metric": "health_checks", "component": "cache",
                             "latencyMs": v} for v in high])  # fmt: skip
    recorder.ingest_pending()
    query = {"metric": "health_checks", "timeRange": "1h", "groupBy": ["component"],
             "aggregations": ["sum", "variance", "p50", "p90", "p99"]}  # fmt: skip
    snapshot = recorder.store.snapshot("health_checks")
    rows = {r["component"]: r for r in execute(parse_query(query), snapshot, Limits()).rows}
    exact = execute(parse_query({**query, "exact": True}), snapshot, Limits()).rows
    for values, row in ((mixed, rows["db"]), (high, rows["cache"])):
        assert math.isclose(row["sum"], sum(values), rel_tol=1e-9, abs_tol=1.0)
        assert math.isclose(row["variance"], float(np.var(values, ddof=1)), rel_tol=1e-9)
    (exact_high,) = (r for r in exact if r["component"] == "cache")
    for key in ("p50", "p90", "p99"):  # the sketch's bound holds up to the limit
        assert abs(rows["cache"][key] - exact_high[key]) <= RELATIVE_ERROR * exact_high[key]


@pytest.mark.parametrize(
    "stamp", [pytest.param(10**400, id="10**400"), 253402300800, -1, math.nan, True]
)
@pytest.mark.parametrize("batch", [False, True])
def test_timestamps_outside_epoch_seconds_are_refused_naming_the_range(
    stamp: Any, batch: bool
) -> None:
    recorder = make_recorder()
    with pytest.raises(InputError) as caught:
        record_one(recorder, "policy_decisions", {**DECISION, "timestamp": stamp}, batch)
    assert caught.value.path.endswith("timestamp")
    assert caught.value.allowed == ["an aware datetime", "epoch seconds from 0 to 253402300800"]
