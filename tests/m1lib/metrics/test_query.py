"""The DSL: the seed's form and the full form parse; every mistake names its path; nothing crashes."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from m1lib.errors import InputError
from m1lib.metrics import TEMPLATES, query_json_schema, template
from m1lib.metrics.engine import execute
from m1lib.metrics.plan import Limits
from m1lib.metrics.query import AGGREGATION_OPS, FILTER_OPS, Query, parse_query
from m1lib.metrics.schema import METRICS
from m1lib.metrics.store import EventStore
from tests.m1lib.metrics.factories import NOW_S, load, make_events

SEED = {"metric": "policy_decisions", "timeRange": "24h", "groupBy": ["toolName", "scope"],
        "filters": [{"field": "allowed", "op": "eq", "value": False}],
        "aggregations": ["count", "percentiles"]}  # fmt: skip
FULL = {
    "metric": "tool_executions",
    "timeRange": {"from": "2027-01-14T12:00:00Z", "to": "2027-01-15T06:00:00Z"},
    "interval": "5m",
    "groupBy": ["toolName"],
    "filters": [{"field": "success", "op": "eq", "value": False},
                {"or": [{"field": "toolName", "op": "startsWith", "value": "web_"},
                        {"field": "durationMs", "op": "gte", "value": 500}]}],
    "field": "durationMs",
    "aggregations": ["count", "avg", "p99", {"op": "percentiles", "values": [50, 90, 99.5]},
                     {"op": "distinct", "field": "scope", "as": "scopes"},
                     {"op": "ratio", "where": {"field": "success", "op": "eq", "value": False}, "as": "failShare"},
                     {"op": "rate", "as": "perSecond"}],
    "having": [{"field": "count", "op": "gt", "value": 10}],
    "orderBy": [{"field": "p99", "direction": "desc"}],
    "limit": 100, "offset": 0, "exact": False,
    "detect": {"trend": {"field": "p99"},
               "anomaly": {"field": "count", "method": "zscore", "window": 10, "threshold": 2.0}},
}  # fmt: skip


@pytest.fixture(scope="module")
def store() -> EventStore:
    built = EventStore(clock=lambda: NOW_S)
    for i, metric in enumerate(METRICS):
        load(built, metric, make_events(metric, 600, seed=i))
    return built


def run(store: EventStore, query: Any, **limits: Any) -> Any:
    parsed = parse_query(query)
    return execute(parsed, store.snapshot(parsed.metric), Limits(**limits))


def test_the_seed_query_is_valid_as_written_from_a_dict_and_from_json() -> None:
    for form in (SEED, json.dumps(SEED), json.dumps(SEED).encode()):
        query = parse_query(form)  # type: ignore[arg-type]
        assert [key for a in query.aggregations for key in a.output_keys()] == [
            "count",
            "p50",
            "p95",
            "p99",
        ]
    assert parse_query(parse_query(SEED)) == parse_query(SEED)


def test_the_full_form_of_the_contract_parses_and_runs(store: EventStore) -> None:
    query = parse_query(FULL)
    assert query.filters[1].is_group
    keys = [key for a in query.aggregations for key in a.output_keys()]
    assert keys == [
        "count",
        "avg",
        "p99",
        "p50",
        "p90",
        "p99.5",
        "scopes",
        "failShare",
        "perSecond",
    ]
    result = run(store, FULL)
    assert json.dumps(result.to_dict(), allow_nan=False)


@pytest.mark.parametrize(
    ("query", "path", "allowed_has"),
    [
        ({"metric": "nope"}, "/metric", "policy_decisions"),
        ({**SEED, "timeRange": "24x"}, "/timeRange", "24h"),
        ({**SEED, "timeRange": 5}, "/timeRange", None),
        ({**SEED, "timeRange": {"from": "2027-01-02T00:00:00Z", "to": "2027-01-01T00:00:00Z"}}, "/timeRange/to", None),
        ({**SEED, "timeRange": {"from": "2027-01-01T00:00:00", "to": "2027-01-02T00:00:00Z"}}, "/timeRange/from", None),
        ({**SEED, "interval": "0s"}, "/interval", "5m"),
        ({**SEED, "filters": [{"field": "allowed", "op": "like", "value": 1}]}, "/filters/0/op", "startsWith"),
        ({**SEED, "filters": [{"field": "allowed", "value": 1}]}, "/filters/0/op", "eq"),
        ({**SEED, "filters": [{"op": "eq", "value": 1}]}, "/filters/0/field", None),
        ({**SEED, "filters": [{"field": "allowed", "op": "eq"}]}, "/filters/0/value", None),
        ({**SEED, "filters": [{"or": [{"field": "a", "op": "eq"}]}]}, "/filters/0/or/0/value", None),
        ({**SEED, "filters": [{"and": [], "field": "x"}]}, "/filters/0/and", None),
        ({**SEED, "filters": [{"field": "a", "op": "eq", "value": 1, "extra": 2}]}, "/filters/0/extra", None),
        ({**SEED, "aggregations": ["p42"]}, "/aggregations/0/op", "percentiles"),
        ({**SEED, "aggregations": [{"op": "ratio"}]}, "/aggregations/0", None),
        ({**SEED, "aggregations": [{"op": "count", "values": [5]}]}, "/aggregations/0", None),
        ({**SEED, "aggregations": [{"op": "percentiles", "values": [101]}]}, "/aggregations/0/values/0", None),
        ({**SEED, "limit": 0}, "/limit", None),
        ({**SEED, "orderBy": [{"field": "count", "direction": "up"}]}, "/orderBy/0/direction", "desc"),
        ({**SEED, "detect": {"anomaly": {"field": "count", "method": "iforest"}}}, "/detect/anomaly/method", "mad"),
        ({**SEED, "colour": "red"}, "/colour", None),
        ("{not json", "/", None),
        (42, "/", "a mapping"),
    ],
)  # fmt: skip
def test_a_query_that_does_not_validate_names_the_path(
    query: Any, path: str, allowed_has: str | None
) -> None:
    with pytest.raises(InputError) as caught:
        parse_query(query)
    assert caught.value.path == path
    if allowed_has is not None:
        assert allowed_has in caught.value.allowed


@pytest.mark.parametrize(
    ("change", "path", "allowed_has"),
    [
        ({"groupBy": ["colour"]}, "/groupBy/0", "toolName"),
        ({"groupBy": ["checkMs"]}, "/groupBy/0", "scope"),
        ({"groupBy": ["scope", "scope"]}, "/groupBy/1", None),
        ({"filters": [{"field": "colour", "op": "eq", "value": 1}]}, "/filters/0/field", "subject"),
        ({"filters": [{"field": "allowed", "op": "eq", "value": "no"}]}, "/filters/0/value", "true or false"),
        ({"filters": [{"field": "allowed", "op": "gt", "value": True}]}, "/filters/0/op", "eq"),
        ({"filters": [{"field": "checkMs", "op": "contains", "value": "1"}]}, "/filters/0/op", "in"),
        ({"filters": [{"field": "toolName", "op": "in", "value": "web"}]}, "/filters/0/value", None),
        ({"filters": [{"field": "toolName", "op": "in", "value": ["a", 3]}]}, "/filters/0/value/1", "a string"),
        ({"filters": [{"field": "toolName", "op": "exists", "value": "yes"}]}, "/filters/0/value", "true"),
        ({"filters": [{"or": [{"field": "x", "op": "eq", "value": 1}]}]}, "/filters/0/or/0/field", None),
        ({"field": "colour"}, "/field", None),
        ({"aggregations": [{"op": "sum", "field": "toolName"}]}, "/aggregations/0/field", "checkMs"),
        ({"aggregations": ["count", "count"]}, "/aggregations/1", None),
        ({"aggregations": ["count", {"op": "sum", "as": "count"}]}, "/aggregations/1/as", None),
        ({"aggregations": [{"op": "distinct"}]}, "/aggregations/0/field", None),
        ({"aggregations": [{"op": "ratio", "where": {"field": "nope", "op": "eq", "value": 1}}]},
         "/aggregations/0/where/field", None),
        ({"having": [{"field": "p42", "op": "gt", "value": 1}]}, "/having", "count"),
        ({"orderBy": [{"field": "p42"}]}, "/orderBy/0/field", "count"),
        ({"limit": 60_000}, "/limit", None),
        ({"detect": {"trend": {"field": "count"}}}, "/detect", None),
        ({"interval": "1h", "detect": {"trend": {"field": "p42"}}}, "/detect/trend/field", "count"),
        ({"timeRange": "91d"}, "/timeRange", None),
        ({"timeRange": "90d", "interval": "1s"}, "/interval", None),
        ({"timeRange": "30d", "groupBy": ["subject"]}, "/groupBy/0", None),
        ({"timeRange": "3d", "exact": True}, "/exact", None),
        ({"timeRange": "3d", "interval": "30s"}, "/interval", None),
        ({"timeRange": "10d", "interval": "5m"}, "/interval", "an interval in whole hours"),
    ],
)  # fmt: skip
def test_a_valid_query_the_metric_cannot_answer_names_the_path(
    store: EventStore, change: dict[str, Any], path: str, allowed_has: str | None
) -> None:
    query = {**SEED, "filters": [], **change}
    with pytest.raises(InputError) as caught:
        run(store, query)
    assert caught.value.path == path, caught.value
    if allowed_has is not None:
        assert any(allowed_has in item for item in caught.value.allowed), caught.value.allowed


def test_error_alerts_have_no_numeric_field() -> None:
    with pytest.raises(InputError) as caught:
        run(EventStore(), {"metric": "error_alerts", "aggregations": ["p99"]})
    assert caught.value.path == "/aggregations/0/field"
    assert "count" in caught.value.allowed


def test_guards_on_groups_rows_and_time(store: EventStore) -> None:
    by_subject = {
        "metric": "policy_decisions",
        "timeRange": "24h",
        "groupBy": ["subject", "toolName"],
    }
    with pytest.raises(InputError) as caught:
        run(store, by_subject, max_groups=5)
    assert caught.value.path == "/groupBy"
    assert "M1_QUERY_MAX_GROUPS" in caught.value.allowed[0]
    result = run(store, by_subject, max_rows=3)
    assert len(result.rows) == 3
    assert result.meta.truncated
    assert result.meta.total_rows > 3
    with pytest.raises(InputError) as caught:
        run(store, {**by_subject, "limit": 4}, max_rows=3)
    assert caught.value.path == "/limit"
    with pytest.raises(InputError) as caught:
        run(store, by_subject, timeout_s=1e-9)
    assert "M1_QUERY_TIMEOUT_S" in caught.value.problem
    with pytest.raises(InputError) as caught:
        run(store, {"metric": "health_checks", "timeRange": "2d"}, max_range=timedelta(days=1))
    assert caught.value.path == "/timeRange"


def test_every_template_is_valid_and_runs(store: EventStore) -> None:
    names = {t.name for t in TEMPLATES}
    assert {"denied_decisions_by_tool", "cache_hit_rate_by_tool", "tool_latency_p99_5m", "spend_by_model",
            "error_alerts_by_level"} <= names  # fmt: skip
    for t in TEMPLATES:
        assert json.dumps(run(store, template(t.name)).to_dict(), allow_nan=False)
    with pytest.raises(InputError):
        template("nope")


def test_the_json_schema_describes_the_dsl() -> None:
    schema = query_json_schema()
    assert schema["$schema"].endswith("2020-12/schema")
    assert set(schema["required"]) == {"metric"}
    properties = schema["properties"]
    assert {"metric", "timeRange", "interval", "groupBy", "filters", "field", "aggregations", "having",
            "orderBy", "limit", "offset", "exact", "detect"} == set(properties)  # fmt: skip
    filter_schema = schema["$defs"]["Filter"]
    assert {"and", "or", "field", "op", "value"} == set(filter_schema["properties"])
    assert filter_schema["properties"]["op"]["anyOf"][0]["enum"] == list(FILTER_OPS)
    assert schema["$defs"]["Aggregation"]["properties"]["op"]["enum"] == list(AGGREGATION_OPS)
    assert Query.model_validate(SEED)


# -- property tests: random and malformed queries never crash ---------------------------------

FIELDS = sorted(
    {f.name for spec in METRICS.values() for f in spec.fields} | {"nope", "bucket", "count"}
)
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-10, 10_000), st.floats(allow_nan=True),
                    st.sampled_from(["read", "web_search", "", "x" * 3, "ok", "db"]))  # fmt: skip
VALUES = st.one_of(SCALARS, st.lists(SCALARS, max_size=4))
CONDITIONS = st.fixed_dictionaries(
    {"field": st.sampled_from(FIELDS), "op": st.sampled_from([*FILTER_OPS, "like"])},
    optional={"value": VALUES},
)
FILTERS = st.recursive(CONDITIONS, lambda inner: st.dictionaries(
    st.sampled_from(["and", "or"]), st.lists(inner, max_size=3), min_size=1, max_size=1), max_leaves=6)  # fmt: skip
AGGREGATIONS = st.one_of(
    st.sampled_from([*AGGREGATION_OPS, "p42"]),
    st.fixed_dictionaries({"op": st.sampled_from(AGGREGATION_OPS)}, optional={
        "field": st.sampled_from(FIELDS), "as": st.sampled_from(["a", "b", "count", "bucket"]),
        "values": st.lists(st.floats(-5, 105), min_size=1, max_size=3), "where": CONDITIONS}),
)  # fmt: skip
QUERIES = st.fixed_dictionaries(
    {"metric": st.sampled_from([*METRICS, "nope"])},
    optional={
        "timeRange": st.one_of(st.sampled_from(["1h", "24h", "3d", "30s", "0m", "91d", "x"]),
                               st.fixed_dictionaries({"from": st.sampled_from(["2027-01-14T00:00:00Z", "bad"]),
                                                      "to": st.sampled_from(["2027-01-15T08:00:00Z", "2020-01-01T00:00:00Z"])})),
        "interval": st.sampled_from(["1s", "90s", "5m", "1h", "1d", "0m"]),
        "groupBy": st.lists(st.sampled_from(FIELDS), max_size=3),
        "filters": st.lists(FILTERS, max_size=3),
        "field": st.sampled_from(FIELDS),
        "aggregations": st.lists(AGGREGATIONS, max_size=4),
        "having": st.lists(CONDITIONS, max_size=2),
        "orderBy": st.lists(st.fixed_dictionaries({"field": st.sampled_from(FIELDS)},
                                                  optional={"direction": st.sampled_from(["asc", "desc", "up"])}),
                            max_size=2),
        "limit": st.integers(-1, 20_000), "offset": st.integers(-1, 50), "exact": st.booleans(),
        "detect": st.fixed_dictionaries({}, optional={
            "trend": st.fixed_dictionaries({"field": st.sampled_from(["count", "p99", "x"])}),
            "anomaly": st.fixed_dictionaries({"field": st.sampled_from(["count", "p50"])},
                                             optional={"method": st.sampled_from(["zscore", "mad", "x"]),
                                                       "window": st.integers(0, 20)})}),
    },
)  # fmt: skip


def _assert_clear(error: InputError) -> None:
    assert error.path.startswith("/")
    assert error.problem


def _answer_or_clear_error(store: EventStore, query: Any) -> None:
    try:
        result = run(store, query)
    except InputError as error:
        _assert_clear(error)
        return
    json.dumps(result.to_dict(), allow_nan=False)
    frame = result.to_frame()
    assert len(frame) == len(result.rows)


@settings(deadline=None, max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(QUERIES)
def test_random_queries_give_a_valid_result_or_a_clear_error(
    store: EventStore, query: dict[str, Any]
) -> None:
    _answer_or_clear_error(store, query)


JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=5)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=10,
)  # fmt: skip


@settings(deadline=None, max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(JSON, st.dictionaries(st.sampled_from(["metric", *SEED, "detect", "limit"]), JSON, max_size=5),
                 st.text(max_size=30)))  # fmt: skip
def test_malformed_input_is_a_clear_error(store: EventStore, query: Any) -> None:
    _answer_or_clear_error(store, query)


def test_an_integer_sum_past_int64_is_a_float_not_a_wrapped_integer() -> None:
    store = EventStore(clock=lambda: NOW_S)
    n, big = 1100, 2**53  # each event at the recorder's limit; together past 2**63
    store.append(
        "cost_updates",
        [int(NOW_S * 1e6) - 1000 - i for i in range(n)],
        {"model": ["m"] * n, "toolName": ["t"] * n, "component": ["c"] * n,
         "inputTokens": [big] * n, "outputTokens": [1] * n, "costUsd": [0.5] * n, "replica": ["r"] * n},
    )  # fmt: skip
    rows = run(store, {"metric": "cost_updates", "timeRange": "1h", "field": "inputTokens",
                       "aggregations": ["sum", {"op": "sum", "field": "outputTokens", "as": "out"}]}).rows  # fmt: skip
    assert rows[0]["sum"] == float(n * big)
    assert rows[0]["out"] == n
    assert isinstance(rows[0]["out"], int)
