"""Recording: validation names metric, field and what is allowed; a full queue drops and counts."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from enum import StrEnum
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from m1lib.errors import InputError
from m1lib.metrics.engine import execute
from m1lib.metrics.plan import Limits
from m1lib.metrics.query import parse_query
from m1lib.metrics.recorder import Recorder
from m1lib.metrics.schema import (
    FLOAT_LIMIT,
    INT_LIMIT,
    METRICS,
    TIMESTAMP_LIMIT_S,
    FieldSpec,
    Kind,
)
from m1lib.metrics.sketch import RELATIVE_ERROR
from m1lib.metrics.store import EventStore
from m1lib.settings import Settings
from tests.m1lib.metrics.conftest import MakeRuntime
from tests.m1lib.metrics.factories import NOW_S
from tests.waiting import wait_for

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


def _ingest_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == "m1-metrics-ingest"}


def test_close_stores_what_the_thread_had_not_taken_yet() -> None:
    """No event is lost at close: the thread stops, then close ingests the rest itself."""
    recorder = Recorder(EventStore(), replica_id="r1", queue_size=100_000, flush_s=3600.0)
    others = _ingest_threads()  # other tests' recorders (the process default) may run
    recorder.start()
    (thread,) = _ingest_threads() - others
    for _ in range(300):
        recorder.record_event("policy_decisions", **DECISION)
    recorder.close()
    assert not recorder.running
    assert not thread.is_alive()
    assert recorder.queued == 0
    assert count(recorder) == 300
    recorder.close()  # twice: nothing more to do
    assert count(recorder) == 300


def test_start_twice_runs_one_thread_and_close_before_start_does_nothing() -> None:
    recorder = make_recorder()
    recorder.record_event("policy_decisions", **DECISION)
    recorder.close()  # never started: leaves the queue to flush() or ingest_pending()
    assert recorder.queued == 1
    others = _ingest_threads()
    recorder.start()
    recorder.start()
    try:
        assert len(_ingest_threads() - others) == 1
        assert recorder.flush(10)
        assert count(recorder) == 1
    finally:
        recorder.close()


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
ALERT: dict[str, Any] = {"level": "warning", "source": "cache", "message": "slow", "metadata": None}
GOOD = {"policy_decisions": DECISION, "cost_updates": COST, "health_checks": HEALTH,
        "error_alerts": ALERT}  # fmt: skip


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


# -- one bad event never costs the good ones --------------------------------------------------------

DECISION_VALUES = tuple(DECISION[f.name] for f in METRICS["policy_decisions"].declared)
COST_VALUES = tuple(COST[f.name] for f in METRICS["cost_updates"].declared)
BAD_TRUSTED = [
    pytest.param("policy_decisions", DECISION_VALUES[:-1], None, "invalid:policy_decisions",
                 id="one value short"),
    pytest.param("policy_decisions", (*DECISION_VALUES, 1.0), None, "invalid:policy_decisions",
                 id="one value too many"),
    pytest.param("policy_decisions", (*DECISION_VALUES[:-1], "fast"), None,
                 "invalid:policy_decisions.checkMs", id="text for a number"),
    pytest.param("policy_decisions", (*DECISION_VALUES[:-1], 1e308), None,
                 "invalid:policy_decisions.checkMs", id="a float whose sum overflows"),
    pytest.param("policy_decisions", (*DECISION_VALUES[:-1], math.nan), None,
                 "invalid:policy_decisions.checkMs", id="nan"),
    pytest.param("policy_decisions", ("t", "admin", True, "ok", "s", 0.1), None,
                 "invalid:policy_decisions.scope", id="not a scope"),
    pytest.param("policy_decisions", ("t", "read", None, "ok", "s", 0.1), None,
                 "invalid:policy_decisions.allowed", id="null"),
    pytest.param("policy_decisions", (["t"], "read", True, "ok", "s", 0.1), None,
                 "invalid:policy_decisions.toolName", id="unhashable"),
    pytest.param("policy_decisions", DECISION_VALUES, 2**63, "invalid:policy_decisions.timestamp",
                 id="timestamp beyond int64"),
    pytest.param("policy_decisions", DECISION_VALUES, 1.5e15, "invalid:policy_decisions.timestamp",
                 id="float timestamp"),
    pytest.param("cost_updates", (*COST_VALUES[:3], 2**63, *COST_VALUES[4:]), None,
                 "invalid:cost_updates.inputTokens", id="int beyond int64"),
    pytest.param("no_such_metric", DECISION_VALUES, None, "invalid:metric", id="unknown metric"),
]  # fmt: skip


@pytest.mark.parametrize(("metric", "values", "stamp", "reason"), BAD_TRUSTED)
def test_one_bad_trusted_event_among_2000_good_is_dropped_alone_and_counted_by_reason(
    metric: str, values: tuple[Any, ...], stamp: Any, reason: str
) -> None:
    recorder = make_recorder(queue_size=10_000)
    good_metric = metric if metric in METRICS else "policy_decisions"
    good = {"policy_decisions": DECISION_VALUES, "cost_updates": COST_VALUES}[good_metric]
    recorder.record_events([{"metric": good_metric, **GOOD[good_metric]}] * 1000)
    recorder.record_trusted(metric, values, timestamp_us=stamp)
    for _ in range(1000):
        recorder.record_trusted(good_metric, good)
    assert recorder.ingest_pending() == 2001  # one ingest batch
    assert count(recorder, good_metric) == 2000
    assert recorder.drops == {reason: 1}
    assert recorder.dropped_events == 1
    assert recorder.queued == 0


def test_a_store_failure_on_one_event_drops_that_event_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    recorder = make_recorder(queue_size=10_000)
    encode = recorder.store.encode

    def refuses_poison(metric: str, ts: Any, columns: Any) -> Any:
        if "poison" in columns["subject"]:
            raise ValueError("the store cannot hold poison")
        return encode(metric, ts, columns)

    monkeypatch.setattr(recorder.store, "encode", refuses_poison)
    events = [{"metric": "policy_decisions", **DECISION} for _ in range(2001)]
    events[1234]["subject"] = "poison"
    assert recorder.record_events(events) == 2001
    recorder.ingest_pending()
    assert count(recorder) == 2000
    assert recorder.drops == {"store_error": 1}


def test_drops_are_logged_by_reason_in_one_line_per_period(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="m1.metrics")
    recorder = make_recorder(queue_size=10)
    bad = (*DECISION_VALUES[:-1], math.inf)
    for _ in range(50):  # 10 fit in the queue, 40 are dropped as it is full
        recorder.record_trusted("policy_decisions", bad)
    recorder.ingest_pending()
    (line,) = [r.getMessage() for r in caplog.records]
    assert "dropped 50 events" in line
    assert (
        "invalid:policy_decisions.checkMs 10 (e.g. policy_decisions.checkMs: inf is not a" in line
    )
    assert "queue_full 40" in line
    caplog.clear()
    for _ in range(5):
        recorder.record_trusted("policy_decisions", bad)
        recorder.ingest_pending()
    assert caplog.records == []  # within the period: counted, not logged
    assert recorder.report_drops(force=True)
    (line,) = [r.getMessage() for r in caplog.records]
    assert "dropped 5 events" in line
    assert recorder.drops == {"invalid:policy_decisions.checkMs": 15, "queue_full": 40}


def test_runtime_figures_carry_the_drops_by_reason(
    make_settings: Callable[..., Settings], make_runtime: MakeRuntime
) -> None:
    runtime = make_runtime(make_settings(events={"queue_size": 100}), replica_id="r", start=False)
    runtime.recorder.record_trusted("cost_updates", (*COST_VALUES[:3], 2**63, *COST_VALUES[4:]))
    for _ in range(100):
        runtime.record_event("policy_decisions", **DECISION)
    runtime.recorder.ingest_pending()
    stats = runtime.stats()
    assert stats["droppedEvents"] == runtime.dropped_events == 2
    assert stats["droppedByReason"] == {"invalid:cost_updates.inputTokens": 1, "queue_full": 1}


# -- property: whatever is accepted is stored and answers queries -----------------------------------

_ABSENT = object()
_AGO = "seconds ago"  # a timestamp drawn as an offset from now, resolved when the test runs


def _values(f: FieldSpec) -> tuple[st.SearchStrategy[Any], st.SearchStrategy[Any]]:
    """What fits the field, and what does not: wrong types, null, absent, out of range, NaN."""
    if f.kind is Kind.FLOAT:
        fits: st.SearchStrategy[Any] = st.one_of(
            st.floats(-FLOAT_LIMIT, FLOAT_LIMIT), st.integers(-(10**6), 10**6)
        )
        wrong: st.SearchStrategy[Any] = st.one_of(
            st.floats().filter(lambda x: not abs(x) <= FLOAT_LIMIT),
            st.integers(4 * 10**17, 2**70),
            st.booleans(),
            st.just("1.5"),
        )
    elif f.kind is Kind.INT:
        fits = st.one_of(st.integers(-INT_LIMIT, INT_LIMIT), st.floats(-1e6, 1e6).map(round))
        wrong = st.one_of(
            st.integers(INT_LIMIT + 1, 2**70), st.integers(-(2**70), -INT_LIMIT - 1),
            st.floats(0.1, 0.9), st.floats(allow_nan=True).filter(lambda x: x != x or abs(x) > 1e300),
            st.booleans(), st.just("7"),
        )  # fmt: skip
    elif f.kind is Kind.BOOL:
        fits, wrong = st.booleans(), st.one_of(st.integers(0, 1), st.just("true"))
    else:
        fits = st.sampled_from(f.choices) if f.choices else st.text(max_size=6)
        wrong = st.one_of(st.just("x" * 2001), st.integers(0, 3), st.just(b"bytes"))
        if f.choices:
            wrong = st.one_of(wrong, st.text(max_size=6).filter(lambda x: x not in f.choices))
    if f.optional:
        fits = st.one_of(fits, st.none(), st.just(_ABSENT))
    else:
        wrong = st.one_of(wrong, st.none(), st.just(_ABSENT))
    return fits, wrong


_STAMPS = (
    st.one_of(st.just(_ABSENT), st.none(), st.tuples(st.just(_AGO), st.floats(1, 3000))),
    st.one_of(st.integers(-(2**65), -1), st.integers(TIMESTAMP_LIMIT_S, 2**65),
              st.just(math.nan), st.just("now")),
)  # fmt: skip


@st.composite
def _events(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    """An event of a random metric, valid about half the time, else with one thing wrong."""
    metric = draw(st.sampled_from(sorted(METRICS)))
    declared = METRICS[metric].declared
    spoil = draw(st.integers(0, 2 * len(declared) + 3))  # which one is wrong, if any
    fields = {}
    for index, f in enumerate(declared):
        fits, wrong = _values(f)
        fields[f.name] = draw(wrong if index == spoil else fits)
    fields["timestamp"] = draw(_STAMPS[spoil == len(declared)])
    if spoil == len(declared) + 1:
        fields["colour"] = "red"
    return metric, {name: value for name, value in fields.items() if value is not _ABSENT}


@settings(deadline=None, max_examples=300)
@given(event=_events(), how=st.sampled_from(["record_event", "record_events", "record_trusted"]))
def test_any_accepted_event_is_stored_and_queryable(
    event: tuple[str, dict[str, Any]], how: str
) -> None:
    metric, fields = event
    if isinstance(fields.get("timestamp"), tuple):
        fields["timestamp"] = time.time() - fields["timestamp"][1]
    spec = METRICS[metric]
    other = "health_checks" if metric == "error_alerts" else "error_alerts"
    recorder = make_recorder()
    try:
        if how == "record_event":
            for _ in range(2):
                recorder.record_event(metric, **fields)
        elif how == "record_events":
            recorder.record_events([{"metric": metric, **fields}] * 2)
        else:  # no validation: the ingest thread stores it, or drops it alone
            stamp = fields.get("timestamp")
            if isinstance(stamp, int | float) and stamp == stamp:  # epoch seconds (not NaN)
                stamp = round(stamp * 1_000_000)  # microseconds, as the policy engine passes
            values = tuple(fields.get(f.name) for f in spec.declared)
            recorder.record_trusted(metric, values, stamp)
            recorder.record_trusted(other, tuple(GOOD[other].values()))
            recorder.record_trusted(metric, values, stamp)
    except InputError as error:
        refused: InputError | None = error
    else:
        refused = None
    if refused is not None:  # refused on the caller's thread: names the field, queues nothing
        assert refused.path.startswith((f"{metric}.", "events[0]."))
        assert recorder.queued == 0
        return
    recorder.ingest_pending()
    if how == "record_trusted":
        assert count(recorder, other) == 1  # never costs another event
        if recorder.drops:
            ((reason, dropped),) = recorder.drops.items()
            assert reason.startswith("invalid:")
            assert dropped == 2
            assert count(recorder, metric) == 0
            return
    assert recorder.drops == {}
    snapshot = recorder.store.snapshot(metric)
    assert count(recorder, metric) == 2
    for name in spec.measures:
        sent = fields[name]  # an int in a float field is stored as the nearest float
        sent = float(sent) if spec.by_name[name].kind is Kind.FLOAT else sent
        for exact in (False, True):
            query = {"metric": metric, "timeRange": "1h", "field": name, "exact": exact,
                     "aggregations": ["sum", "min", "max", "variance", "p50"]}  # fmt: skip
            (row,) = execute(parse_query(query), snapshot, Limits()).rows
            assert row["min"] == row["max"] == row["p50"] == sent
            assert row["sum"] == 2 * sent
            assert row["variance"] == 0.0
    for name in spec.dimensions:
        query = {"metric": metric, "timeRange": "1h", "groupBy": [name]}
        (row,) = execute(parse_query(query), snapshot, Limits()).rows
        assert row[name] == (recorder.replica_id if name == "replica" else fields.get(name))


def _refusal(record: Callable[[], object]) -> InputError | None:
    try:
        record()
    except InputError as error:
        return error
    return None


@settings(deadline=None, max_examples=300)
@given(event=_events())
def test_record_events_refuses_exactly_what_record_event_refuses(
    event: tuple[str, dict[str, Any]],
) -> None:
    """record_events checks a batch column by column; it must agree with the per-event check."""
    metric, fields = event
    if isinstance(fields.get("timestamp"), tuple):
        fields["timestamp"] = time.time() - fields["timestamp"][1]
    one = _refusal(lambda: make_recorder().record_event(metric, **fields))
    many = _refusal(lambda: make_recorder().record_events([{"metric": metric, **fields}] * 2))
    if one is None or many is None:
        assert one is many is None
    else:
        assert (many.path, many.problem) == (
            one.path.replace(f"{metric}.", "events[0].", 1),
            one.problem,
        )


def test_record_now_is_handed_on_first_as_a_batch_of_its_own() -> None:
    batches: list[list[str]] = []
    recorder = Recorder(
        EventStore(),
        replica_id="r1",
        on_batch=lambda batch: batches.append([m for m, c in batch for _ in range(c.size)]),
    )
    recorder.record_event("health_checks", **HEALTH)
    recorder.record_now("error_alerts", None, ALERT)
    recorder.record_event("policy_decisions", **DECISION)
    assert recorder.queued == 3
    assert recorder.ingest_pending() == 3
    assert batches == [["error_alerts"], ["health_checks", "policy_decisions"]]
    assert recorder.queued == 0
    assert count(recorder, "error_alerts") == 1


def test_record_now_validates_and_keeps_the_queue_bound() -> None:
    recorder = make_recorder(queue_size=1)
    with pytest.raises(InputError, match=r"error_alerts\.level"):
        recorder.record_now("error_alerts", None, {**ALERT, "level": "info"})
    recorder.record_event("health_checks", **HEALTH)
    recorder.record_now("error_alerts", None, ALERT)
    assert recorder.drops == {"queue_full": 1}
    recorder.ingest_pending()
    assert count(recorder, "error_alerts") == 0


def test_record_now_wakes_the_ingest_thread_at_once() -> None:
    recorder = Recorder(EventStore(), replica_id="r1", flush_s=3600.0)
    recorder.start()
    try:
        assert recorder.flush()  # the start-up pass is over; the next timed one is an hour away
        recorder.record_now("error_alerts", None, ALERT)
        wait_for(lambda: count(recorder, "error_alerts"), "the alert stored", timeout_s=10)
    finally:
        recorder.close()
