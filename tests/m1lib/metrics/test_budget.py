"""A query can never run away: time, memory, detection work, cancellation and concurrency.

The runaway query of the hardening issue (a viewer's query over about 60,000 events that never
returned and swung between 0.9 and 3 GB) is the fixture: it must be refused before detection
starts, stop at M1_QUERY_TIMEOUT_S when let through, and stay under M1_QUERY_MAX_MEMORY_MB
(measured with tracemalloc, which numpy reports its buffers to).
"""

from __future__ import annotations

import threading
import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from m1lib.errors import BusyError, InputError
from m1lib.metrics import MetricsRuntime, detect
from m1lib.metrics.budget import Limits, QueryBudget, QueryCancelled
from m1lib.metrics.engine import execute
from m1lib.metrics.query import parse_query
from m1lib.metrics.store import EventStore
from m1lib.settings import Settings
from tests.m1lib.metrics.factories import HOUR_US, NOW_US, as_records, load, make_events
from tests.waiting import wait_for

RUNAWAY: dict[str, Any] = {
    "metric": "tool_executions", "timeRange": "24h", "interval": "1s",
    "groupBy": ["toolName", "scope", "success", "error"],
    "aggregations": ["count", {"op": "percentiles", "values": [1, 5, 10, 25, 50, 75, 90, 95, 99.9]},
                     "stddev", "rate"],
    "detect": {"anomaly": {"field": "count", "method": "mad", "window": 1000}},
}  # fmt: skip
EVENTS = 60_000


@pytest.fixture(scope="module")
def store() -> EventStore:
    built = EventStore.from_settings(Settings(_env_file=None), clock=lambda: NOW_US / 1e6)
    frame = make_events("tool_executions", EVENTS, start_us=NOW_US - 24 * HOUR_US)
    load(built, "tool_executions", frame)
    return built


def run(store: EventStore, query: dict[str, Any], **kwargs: Any) -> Any:
    limits = kwargs.pop("limits", Limits())
    return execute(parse_query(query), store.snapshot(query["metric"]), limits, **kwargs)


def peak_bytes(call: Callable[[], Any]) -> tuple[int, BaseException | None]:
    """Peak traced memory while ``call`` runs (numpy's buffers included), and what it raised."""
    tracemalloc.start()
    try:
        call()
        raised: BaseException | None = None
    except (InputError, QueryCancelled) as error:
        raised = error
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak, raised


def test_the_runaway_query_is_refused_before_detection_starts(store: EventStore) -> None:
    with pytest.raises(InputError) as caught:
        run(store, RUNAWAY)
    assert caught.value.path == "/detect/anomaly/window"
    assert "M1_QUERY_MAX_DETECT_CELLS" in str(caught.value)
    assert "window of 1000" in caught.value.problem


def test_the_runaway_query_let_through_stops_at_the_timeout_under_the_memory_bound(
    store: EventStore,
) -> None:
    limits = Limits(timeout_s=1.0, max_detect_cells=10**12, max_memory_bytes=256 << 20)
    peak, raised = peak_bytes(lambda: run(store, RUNAWAY, limits=limits))
    assert isinstance(raised, InputError), raised
    assert "M1_QUERY_TIMEOUT_S" in raised.problem
    assert raised.problem.endswith("while detecting")
    assert raised.path == "/detect"
    assert peak < limits.max_memory_bytes, f"peak {peak / 2**20:.0f} MB"


class PhaseClock:
    """Reads 0 until its budget enters ``phase``, then far past any deadline."""

    def __init__(self, phase: str) -> None:
        self.phase = phase
        self.budget: QueryBudget | None = None

    def __call__(self) -> float:
        return 1e9 if self.budget is not None and self.budget.phase == self.phase else 0.0


@pytest.mark.parametrize(
    ("phase", "path"),
    [
        ("planning", "/timeRange"),
        ("scanning", "/timeRange"),
        ("grouping", "/groupBy"),
        ("aggregating", "/aggregations"),
        ("ordering", "/orderBy"),
        ("detecting", "/detect"),
    ],
)
def test_the_timeout_bounds_every_phase(store: EventStore, phase: str, path: str) -> None:
    """A clock that jumps past the deadline once ``phase`` starts: that phase must notice."""
    limits = Limits(max_groups=10**6)
    clock = PhaseClock(phase)
    budget = clock.budget = QueryBudget(limits, clock=clock)
    query = {**RUNAWAY, "interval": "1m", "detect": {"anomaly": {"field": "count", "window": 5}}}
    with pytest.raises(InputError, match=f"while {phase};") as caught:
        run(store, query, budget=budget, limits=limits)
    assert caught.value.path == path


def test_a_query_over_the_memory_bound_is_refused_before_it_reads(store: EventStore) -> None:
    query = {"metric": "tool_executions", "timeRange": "24h", "exact": True,
             "groupBy": ["toolName"], "aggregations": ["p99", "count"]}  # fmt: skip
    limits = Limits(max_memory_bytes=1 << 20)
    peak, raised = peak_bytes(lambda: run(store, query, limits=limits))
    assert isinstance(raised, InputError)
    assert raised.path == "/timeRange"
    assert "M1_QUERY_MAX_MEMORY_MB" in raised.problem
    assert "reading 60,000 events" in raised.problem
    assert peak < limits.max_memory_bytes


def test_groups_too_many_to_count_densely_are_counted_sparsely_within_the_bound(
    store: EventStore,
) -> None:
    query = {"metric": "tool_executions", "timeRange": "24h", "interval": "1s",
             "groupBy": ["toolName", "scope", "success", "error"], "aggregations": ["count"]}  # fmt: skip
    limits = Limits(max_memory_bytes=48 << 20)  # dense keys would need ~300 MB
    peak, raised = peak_bytes(lambda: run(store, query, limits=limits))
    assert raised is None
    assert peak < limits.max_memory_bytes
    assert run(store, query, limits=limits).meta.total_rows == run(store, query).meta.total_rows


def test_a_cancelled_query_stops_at_its_next_step(store: EventStore) -> None:
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(QueryCancelled, match="the caller went away"):
        run(store, RUNAWAY, cancel=cancel)


@pytest.mark.parametrize(
    ("member", "path"),
    [
        ({"timeRange": {"from": "0001-01-01T00:00:00+14:00", "to": "0001-01-02T00:00:00Z"}},
         "/timeRange/from"),
        ({"timeRange": {"from": "9999-12-30T00:00:00Z", "to": "9999-12-31T23:59:59-14:00"}},
         "/timeRange/to"),
        ({"interval": "999999999d"}, "/interval"),
        ({"timeRange": "999999999d"}, "/timeRange"),
        ({"filters": [{"field": "durationMs", "op": "gt", "value": 10**400}]}, "/filters/0/value"),
        ({"filters": [{"field": "durationMs", "op": "in", "value": [1, -(10**400)]}]},
         "/filters/0/value"),
        ({"aggregations": [{"op": "ratio", "where": {"field": "durationMs", "op": "lt",
                                                     "value": 10**400}}]},
         "/aggregations/0/where/value"),
        ({"having": [{"field": "count", "op": "gt", "value": 2**63}]}, "/having/0/value"),
        ({"filters": [{"field": "durationMs", "op": "gt", "value": float("inf")}]},
         "/filters/0/value"),
        ({"filters": [{"field": "durationMs", "op": "gt", "value": float("nan")}]},
         "/filters/0/value"),
        ({"filters": [{"and": None}]}, "/filters/0"),
        ({"having": [{"or": None}]}, "/having/0"),
        ({"interval": "1h", "aggregations": [{"op": "first", "field": "toolName"}],
          "detect": {"anomaly": {"field": "first"}}}, "/detect/anomaly/field"),
    ],
)  # fmt: skip
def test_input_that_once_gave_a_500_is_an_input_error_naming_the_field(
    store: EventStore, member: dict[str, Any], path: str
) -> None:
    with pytest.raises(InputError) as caught:
        run(store, {"metric": "tool_executions", **member})
    assert caught.value.path == path


@pytest.mark.parametrize("number", ["1e999", "-1e999", "Infinity", "-Infinity", "NaN", "1" * 401])
def test_non_finite_or_huge_numbers_in_json_text_are_refused_alike(number: str) -> None:
    text = '{"metric": "tool_executions", "filters": [{"field": "durationMs", "op": "gt", "value": %s}]}'
    with pytest.raises(InputError) as caught:
        parse_query(text % number)
    assert caught.value.path == "/filters/0/value"


def test_the_edges_of_event_time_are_answered(store: EventStore) -> None:
    for time_range in (
        {"from": "1970-01-01T00:00:00Z", "to": "1970-01-02T00:00:00Z"},
        {"from": "9999-12-30T00:00:00Z", "to": "9999-12-31T23:59:59.999999Z"},
    ):
        result = run(
            store, {"metric": "tool_executions", "timeRange": time_range, "interval": "1h"}
        )
        assert result.meta.total_rows == 0


def test_deep_filters_are_refused_with_a_path(store: EventStore) -> None:
    node: dict[str, Any] = {"field": "success", "op": "eq", "value": True}
    for _ in range(300):
        node = {"and": [node]}
    with pytest.raises(InputError) as caught:
        run(store, {"metric": "tool_executions", "filters": [node]})
    assert caught.value.path.startswith("/filters/0/and/0")


# -- detection in bounded blocks gives the same answer as the plain definition ----------------------


def reference_scores(series: np.ndarray, method: str, window: int) -> list[tuple[int, float]]:
    """Per present point, its score against the ``window`` present points before it."""
    present = np.flatnonzero(np.isfinite(series))
    y = series[present] / (np.abs(series[present]).max() or 1.0)
    out = []
    for k in range(window, y.size):
        w = y[k - window : k]
        if method == "zscore":
            center, spread = w.mean(), w.std(ddof=1)
        else:
            center = float(np.median(w))
            mad = np.median(np.abs(w - center)) / 0.6744897501960817
            spread = mad if mad > 0 else np.mean(np.abs(w - center)) * 1.2533141373155003
        deviation = y[k] - center
        scale = max(abs(center), 1.0) * 1e-12
        if spread <= scale:
            score = (1000.0 if deviation > 0 else -1000.0) if abs(deviation) > scale else 0.0
        else:
            score = float(np.clip(deviation / spread, -1000, 1000))
        out.append((int(present[k]), score))
    return out


@settings(max_examples=25, deadline=None)
@given(
    data=st.data(),
    method=st.sampled_from(["zscore", "mad"]),
    window=st.sampled_from([3, 700, 1000]),
)
def test_blocked_scores_equal_the_plain_definition(
    data: st.DataObject, method: str, window: int
) -> None:
    size = data.draw(st.integers(window + 1, window + 2 * detect.BLOCK_CELLS // window + 5))
    seed = data.draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    series = rng.poisson(3, size).astype(np.float64)
    series[rng.random(size) < 0.1] = np.nan  # missing buckets
    index, _, score = detect.anomaly_scores(series, method=method, window=window, threshold=0.0)
    expected = reference_scores(series, method, window)
    assert index.tolist() == [i for i, _ in expected]
    np.testing.assert_allclose(score, [s for _, s in expected], rtol=1e-9, atol=1e-9)


# -- the runtime: a few queries at once, and the rest refused ---------------------------------------


@pytest.fixture
def busy_runtime(make_settings: Callable[..., Settings]) -> Iterator[MetricsRuntime]:
    settings = make_settings(
        query={"max_concurrent": 1, "timeout_s": 600, "max_detect_cells": 10**12},
    )
    runtime = MetricsRuntime(settings, replica_id="busy", clock=lambda: NOW_US / 1e6)
    runtime.start()
    frame = make_events("tool_executions", 20_000, start_us=NOW_US - 24 * HOUR_US)
    runtime.record_events(as_records("tool_executions", frame))
    assert runtime.flush(60)
    yield runtime
    runtime.close()


def test_one_query_too_many_is_refused_at_once_and_cancelling_frees_the_slot(
    busy_runtime: MetricsRuntime,
) -> None:
    cancel = threading.Event()
    raised: list[BaseException] = []

    def heavy() -> None:
        try:
            busy_runtime.run_query(RUNAWAY, cancel=cancel)
        except (InputError, QueryCancelled) as error:
            raised.append(error)

    worker = threading.Thread(target=heavy)
    worker.start()
    try:
        wait_for(lambda: busy_runtime.query_counts["running"] == 1, "the heavy query to start")
        with pytest.raises(BusyError) as caught:
            busy_runtime.run_query({"metric": "tool_executions"})
        assert caught.value.retry_after_s >= 1
        assert "M1_QUERY_MAX_CONCURRENT" in str(caught.value)
    finally:
        cancel.set()
        worker.join(120)
    assert not worker.is_alive(), "the cancelled query did not stop"
    assert [type(e) for e in raised] == [QueryCancelled]
    counts = busy_runtime.query_counts
    assert (counts["running"], counts["cancelled"], counts["refused_busy"]) == (0, 1, 1)
    assert busy_runtime.run_query({"metric": "tool_executions"}).meta.total_rows == 1
    assert busy_runtime.stats()["queries"]["completed"] == 1
