"""Every aggregation, filter op, grouping, bucketing and range edge against pandas on the same events.

Each case runs three ways: raw events only, rollups in the middle with raw edges, and rollups only
(a store whose raw retention is one second). Counts and sums are exact, sketch percentiles within
their stated 1 % bound, exact percentiles exact. Cases that need raw events must give a 400 naming
the member when raw events are gone.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import pytest

from m1lib.errors import InputError
from m1lib.metrics.engine import execute
from m1lib.metrics.plan import Limits
from m1lib.metrics.query import parse_query
from m1lib.metrics.schema import METRICS
from m1lib.metrics.sketch import RELATIVE_ERROR
from m1lib.metrics.store import EventStore
from tests.m1lib.metrics.factories import HOUR_US, MINUTE_US, NOW_S, NOW_US, load, make_events
from tests.m1lib.metrics.oracle import assert_matches, oracle

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def iso(us: int) -> str:
    return (EPOCH + timedelta(microseconds=us)).isoformat().replace("+00:00", "Z")


HOUR_EDGE = NOW_US - NOW_US % HOUR_US - 5 * HOUR_US  # an event sits exactly here
DENIED = {"field": "allowed", "op": "eq", "value": False}

# (name, query, needs raw events: the JSON path a rollup-only store must name)
CASES: list[tuple[str, dict[str, Any], str | None]] = [
    ("seed_example", {"metric": "policy_decisions", "timeRange": "24h", "groupBy": ["toolName", "scope"],
                      "filters": [DENIED], "aggregations": ["count", "percentiles"]}, None),
    ("count_sum_avg_min_max", {"metric": "tool_executions", "groupBy": ["toolName"],
                               "aggregations": ["count", "sum", "avg", "min", "max"]}, None),
    ("median_and_named_percentiles", {"metric": "policy_decisions", "groupBy": ["scope"],
                                      "aggregations": ["median", "p50", "p90", "p95", "p99"]}, None),
    ("percentiles_with_values_and_as", {"metric": "health_checks", "groupBy": ["component"],
                                        "aggregations": [{"op": "percentiles", "values": [10, 99.9]},
                                                         {"op": "percentiles", "values": [75], "as": "q3"}]}, None),
    ("exact_percentiles", {"metric": "policy_decisions", "groupBy": ["toolName"], "exact": True,
                           "aggregations": ["percentiles", "median"]}, "/exact"),
    ("stddev_variance", {"metric": "tool_executions", "groupBy": ["toolName", "success"],
                         "aggregations": ["stddev", "variance", "count"]}, None),
    ("rate_per_bucket", {"metric": "policy_decisions", "interval": "1h",
                         "aggregations": [{"op": "rate", "as": "perSecond"}]}, None),
    ("rate_without_interval_and_of_a_field", {"metric": "cost_updates", "groupBy": ["model"],
                                              "aggregations": ["rate", {"op": "rate", "field": "costUsd",
                                                                        "as": "usdPerSecond"}]}, None),
    ("integer_fields", {"metric": "cost_updates", "groupBy": ["model", "component"],
                        "aggregations": [{"op": "sum", "field": "inputTokens", "as": "tokensIn"},
                                         {"op": "min", "field": "outputTokens", "as": "minOut"},
                                         {"op": "max", "field": "outputTokens", "as": "maxOut"},
                                         {"op": "avg", "field": "inputTokens", "as": "avgIn"},
                                         {"op": "p90", "field": "inputTokens", "as": "p90In"}]}, None),
    ("query_level_field", {"metric": "cost_updates", "field": "outputTokens",
                           "aggregations": ["sum", "p50"]}, None),
    ("count_of_an_optional_field", {"metric": "cache_operations", "groupBy": ["cache"],
                                    "aggregations": ["count", {"op": "count", "field": "toolName",
                                                               "as": "withTool"}]}, None),
    ("count_of_an_optional_raw_field", {"metric": "tool_executions", "groupBy": ["toolName"],
                                        "aggregations": [{"op": "count", "field": "error", "as": "errors"}]},
     "/aggregations/0/field"),
    ("distinct_of_a_dimension", {"metric": "policy_decisions", "groupBy": ["scope"],
                                 "aggregations": [{"op": "distinct", "field": "toolName", "as": "tools"}]}, None),
    ("distinct_of_a_raw_field", {"metric": "policy_decisions", "groupBy": ["toolName"],
                                 "aggregations": [{"op": "distinct", "field": "subject", "as": "subjects"},
                                                  {"op": "distinct", "field": "checkMs", "as": "values"}]},
     "/aggregations/0/field"),
    # a number's sums and sketches in a rollup cannot tell its values apart (was a KeyError)
    ("distinct_of_a_number", {"metric": "tool_executions", "groupBy": ["toolName"],
                              "aggregations": [{"op": "distinct", "field": "durationMs", "as": "values"}]},
     "/aggregations/0/field"),
    ("first_and_last", {"metric": "tool_executions", "groupBy": ["toolName"],
                        "aggregations": [{"op": "first", "field": "scope"}, {"op": "last", "field": "durationMs"},
                                         {"op": "last", "field": "success", "as": "lastOk"},
                                         {"op": "first", "field": "error", "as": "firstError"}]},
     "/aggregations/0"),
    ("first_of_integers", {"metric": "cost_updates", "groupBy": ["model"],
                           "aggregations": [{"op": "first", "field": "inputTokens"}]}, "/aggregations/0"),
    ("ratio_on_a_dimension", {"metric": "tool_executions", "groupBy": ["toolName"],
                              "aggregations": [{"op": "ratio", "where": {"field": "success", "op": "eq",
                                                                        "value": False}, "as": "failShare"}]}, None),
    ("ratio_on_a_raw_field", {"metric": "tool_executions", "aggregations": [
        {"op": "ratio", "where": {"field": "error", "op": "startsWith", "value": "time"}, "as": "timeouts"}]},
     "/aggregations/0/where/field"),
    # filter ops
    ("eq_and_ne_strings", {"metric": "policy_decisions", "groupBy": ["reason"],
                           "filters": [{"field": "toolName", "op": "eq", "value": "shell"},
                                       {"field": "scope", "op": "ne", "value": "read"}]}, None),
    ("eq_unknown_value", {"metric": "policy_decisions", "filters": [{"field": "toolName", "op": "eq",
                                                                     "value": "no_such_tool"}]}, None),
    ("eq_null_and_ne_null", {"metric": "cache_operations", "groupBy": ["op"],
                             "filters": [{"field": "toolName", "op": "eq", "value": None}],
                             "aggregations": ["count", "avg"]}, None),
    ("ne_keeps_nulls", {"metric": "cache_operations", "groupBy": ["toolName"],
                        "filters": [{"field": "toolName", "op": "ne", "value": "web_search"}]}, None),
    ("ordered_numbers", {"metric": "tool_executions", "groupBy": ["toolName"],
                         "filters": [{"field": "durationMs", "op": "gt", "value": 50},
                                     {"field": "durationMs", "op": "lte", "value": 400}]},
     "/filters/0/field"),
    ("gte_lt_numbers", {"metric": "cost_updates", "filters": [{"field": "inputTokens", "op": "gte", "value": 1000},
                                                               {"field": "inputTokens", "op": "lt", "value": 3000}],
                        "aggregations": ["count", {"op": "sum", "field": "inputTokens"}]}, "/filters/0/field"),
    ("ordered_strings", {"metric": "policy_decisions", "groupBy": ["toolName"],
                         "filters": [{"field": "toolName", "op": "gte", "value": "fs"},
                                     {"field": "toolName", "op": "lt", "value": "web_search"}]}, None),
    ("in_with_null_and_nin", {"metric": "cache_operations", "groupBy": ["toolName", "op"],
                              "filters": [{"field": "toolName", "op": "in", "value": ["db_query", None]},
                                          {"field": "op", "op": "nin", "value": ["evict"]}]}, None),
    ("in_numbers", {"metric": "cost_updates", "filters": [{"field": "inputTokens", "op": "in",
                                                            "value": [1, 2, 3, 100, 4999]}]}, "/filters/0/field"),
    ("contains_and_starts_with", {"metric": "policy_decisions", "groupBy": ["toolName"],
                                  "filters": [{"field": "toolName", "op": "contains", "value": "_"},
                                              {"field": "toolName", "op": "startsWith", "value": "web"}]}, None),
    ("exists_true_and_false", {"metric": "tool_executions", "groupBy": ["success"],
                               "filters": [{"field": "error", "op": "exists", "value": False}]}, "/filters/0/field"),
    ("exists_default_true", {"metric": "cache_operations", "groupBy": ["cache"],
                             "filters": [{"field": "toolName", "op": "exists"}]}, None),
    ("booleans", {"metric": "cache_operations", "groupBy": ["hit"],
                  "filters": [{"field": "hit", "op": "in", "value": [True]}]}, None),
    ("nested_and_or", {"metric": "policy_decisions", "groupBy": ["toolName", "allowed"],
                       "filters": [{"or": [{"field": "scope", "op": "eq", "value": "write"},
                                           {"and": [{"field": "toolName", "op": "startsWith", "value": "fs"},
                                                    {"field": "allowed", "op": "eq", "value": True}]}]}],
                       "aggregations": ["count", "p95"]}, None),
    ("filter_on_replica", {"metric": "health_checks", "groupBy": ["component"],
                           "filters": [{"field": "replica", "op": "eq", "value": "r2"}]}, "/filters/0/field"),
    # grouping
    ("no_groups", {"metric": "error_alerts", "aggregations": ["count"]}, None),
    ("group_by_boolean", {"metric": "policy_decisions", "groupBy": ["allowed"],
                          "aggregations": ["count", "p99"]}, None),
    ("group_by_optional_with_nulls", {"metric": "cache_operations", "groupBy": ["toolName"],
                                      "aggregations": ["count", "max"]}, None),
    ("group_by_replica", {"metric": "error_alerts", "groupBy": ["replica", "level"]}, "/groupBy/0"),
    ("group_by_raw_field", {"metric": "error_alerts", "groupBy": ["message"]}, "/groupBy/0"),
    ("mostly_empty_group_space", {"metric": "policy_decisions", "interval": "1m", "groupBy": ["subject", "toolName"],
                                  "aggregations": ["count", "p50", "avg"]}, "/groupBy/0"),
    # bucketing
    ("interval_1m", {"metric": "health_checks", "timeRange": "3h", "interval": "1m",
                     "aggregations": ["count", "avg"]}, None),
    ("interval_5m_by_tool", {"metric": "policy_decisions", "interval": "5m", "groupBy": ["toolName"],
                             "aggregations": ["p99", "count"]}, None),
    ("interval_7m", {"metric": "error_alerts", "interval": "7m", "groupBy": ["level"]}, None),
    ("interval_90s", {"metric": "health_checks", "timeRange": "2h", "interval": "90s"}, "/interval"),
    ("interval_1d", {"metric": "cost_updates", "interval": "1d",
                     "aggregations": [{"op": "sum", "field": "costUsd"}, "count"]}, None),
    # ranges
    ("absolute_hours", {"metric": "policy_decisions", "groupBy": ["scope"],
                        "timeRange": {"from": iso(HOUR_EDGE), "to": iso(HOUR_EDGE + 3 * HOUR_US)}}, None),
    ("absolute_minutes_5m_buckets", {"metric": "tool_executions", "interval": "5m",
                                     "timeRange": {"from": iso(HOUR_EDGE + 7 * MINUTE_US),
                                                   "to": iso(HOUR_EDGE + 68 * MINUTE_US)}}, None),
    ("relative_short", {"metric": "policy_decisions", "timeRange": "30m", "groupBy": ["toolName"]}, None),
    ("empty_range", {"metric": "policy_decisions", "groupBy": ["toolName"], "aggregations": ["count", "p99"],
                     "timeRange": {"from": iso(NOW_US - 40 * HOUR_US), "to": iso(NOW_US - 30 * HOUR_US)}}, None),
    ("empty_filter_with_interval", {"metric": "health_checks", "interval": "1h",
                                    "filters": [{"field": "component", "op": "eq", "value": "nothing"}],
                                    "aggregations": ["count", "p50", "stddev"]}, None),
    # having, order, paging
    ("having_order_paging", {"metric": "policy_decisions", "groupBy": ["toolName", "scope"],
                             "aggregations": ["count", "avg"], "having": [{"field": "count", "op": "gt", "value": 80}],
                             "orderBy": [{"field": "count", "direction": "desc"}], "limit": 5, "offset": 1}, None),
    ("having_on_group_field", {"metric": "policy_decisions", "groupBy": ["toolName"],
                               "having": [{"or": [{"field": "toolName", "op": "startsWith", "value": "web"},
                                                  {"field": "count", "op": "lt", "value": 10}]}]}, None),
]  # fmt: skip


@pytest.fixture(scope="module")
def frames() -> dict[str, pd.DataFrame]:
    return {metric: make_events(metric, 2500, seed=i) for i, metric in enumerate(METRICS)}


def _store(frames: dict[str, pd.DataFrame], raw_retention: timedelta) -> EventStore:
    store = EventStore(raw_retention=raw_retention, chunk_events=4096, clock=lambda: NOW_S)
    for metric, frame in frames.items():
        load(store, metric, frame)
    return store


@pytest.fixture(scope="module")
def stores(frames: dict[str, pd.DataFrame]) -> dict[str, EventStore]:
    full = _store(frames, timedelta(hours=24))
    return {"raw": full, "mixed": full, "rollup": _store(frames, timedelta(seconds=1))}


PREFER = {"raw": "raw", "mixed": "rollup", "rollup": "auto"}


def _us(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(microseconds=1)


@pytest.mark.parametrize("variant", ["raw", "mixed", "rollup"])
@pytest.mark.parametrize(("name", "query", "raw_path"), CASES, ids=[c[0] for c in CASES])
def test_query_matches_pandas(stores: dict[str, EventStore], frames: dict[str, pd.DataFrame],
                              variant: str, name: str, query: dict[str, Any], raw_path: str | None) -> None:  # fmt: skip
    store = stores[variant]
    snapshot = store.snapshot(query["metric"])
    if variant == "rollup" and raw_path is not None:
        with pytest.raises(InputError) as caught:
            execute(parse_query(query), snapshot, Limits(), prefer=PREFER[variant])  # type: ignore[arg-type]
        assert caught.value.path == raw_path
        assert "M1_RAW_RETENTION" in caught.value.problem
        return
    result = execute(parse_query(query), snapshot, Limits(), prefer=PREFER[variant])  # type: ignore[arg-type]
    start, end = _us(result.meta.range_from), _us(result.meta.range_to)
    expected = oracle(frames[query["metric"]], query, start, end)
    assert_matches(result.rows, expected, query, relative_error=RELATIVE_ERROR)
    if "orderBy" in query:
        counts = [row["count"] for row in result.rows]
        assert counts == expected["count"].tolist()
    if raw_path is not None or (variant == "raw" and start >= NOW_US - 24 * HOUR_US):
        assert result.meta.source == "raw"
    if variant == "rollup":
        assert result.meta.source == "rollup" or not result.rows
        assert "raw" not in result.meta.resolutions
    bound = result.meta.percentile_error_bound
    has_percentiles = any(
        (a if isinstance(a, str) else a["op"])
        in ("median", "p50", "p90", "p95", "p99", "percentiles")
        for a in query.get("aggregations", [])
    )
    assert bound == ((0.0 if query.get("exact") else RELATIVE_ERROR) if has_percentiles else None)


def test_relative_ranges_end_now_and_are_half_open(stores: dict[str, EventStore]) -> None:
    result = execute(parse_query({"metric": "policy_decisions", "timeRange": "2h"}),
                     stores["raw"].snapshot("policy_decisions"), Limits())  # fmt: skip
    assert _us(result.meta.range_to) == NOW_US
    assert _us(result.meta.range_from) == NOW_US - 2 * HOUR_US


def test_an_event_at_from_counts_and_one_at_to_does_not() -> None:
    store = EventStore(clock=lambda: NOW_S)
    at = [HOUR_EDGE - 1, HOUR_EDGE, HOUR_EDGE + HOUR_US - 1, HOUR_EDGE + HOUR_US]
    store.append("error_alerts", at, {"level": ["warning"] * 4, "source": ["s"] * 4,
                                      "message": ["m"] * 4, "metadata": [None] * 4, "replica": "r1"})  # fmt: skip
    query = {
        "metric": "error_alerts",
        "timeRange": {"from": iso(HOUR_EDGE), "to": iso(HOUR_EDGE + HOUR_US)},
    }
    for prefer in ("raw", "rollup"):
        result = execute(
            parse_query(query), store.snapshot("error_alerts"), Limits(), prefer=prefer
        )  # type: ignore[arg-type]
        assert result.rows == [{"count": 2}]


def test_beyond_raw_retention_the_range_rounds_down_to_whole_minutes(
    stores: dict[str, EventStore],
) -> None:
    result = execute(parse_query({"metric": "health_checks", "timeRange": "20h"}),
                     stores["rollup"].snapshot("health_checks"), Limits())  # fmt: skip
    assert _us(result.meta.range_from) == (NOW_US - 20 * HOUR_US) // MINUTE_US * MINUTE_US
    assert _us(result.meta.range_to) == NOW_US // MINUTE_US * MINUTE_US
    assert result.meta.resolutions == ["1h", "1m"]


SPARSE_CASES = [c for c in CASES if c[0] in ("seed_example", "interval_5m_by_tool", "group_by_optional_with_nulls",
                                               "first_and_last", "distinct_of_a_raw_field", "having_order_paging")]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "query", "raw_path"), SPARSE_CASES, ids=[c[0] for c in SPARSE_CASES]
)
def test_large_group_spaces_take_the_sparse_path_with_the_same_answers(
    monkeypatch: pytest.MonkeyPatch, stores: dict[str, EventStore], frames: dict[str, pd.DataFrame],
    name: str, query: dict[str, Any], raw_path: str | None,
) -> None:  # fmt: skip
    from m1lib.metrics import grouping

    monkeypatch.setattr(grouping, "_DENSE_GROUPS", 1)  # every key space counts as large
    for prefer in ("raw", "rollup"):
        result = execute(
            parse_query(query), stores["raw"].snapshot(query["metric"]), Limits(), prefer=prefer
        )  # type: ignore[arg-type]
        expected = oracle(
            frames[query["metric"]], query, _us(result.meta.range_from), _us(result.meta.range_to)
        )
        assert_matches(result.rows, expected, query, relative_error=RELATIVE_ERROR)
