"""m1lib.record_cost and tool_call(...).cost: the record is exact, the event carries the cost
rounded half-even to the micro-dollar, bad input is an InputError naming the field."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import m1lib
from m1lib.errors import InputError, SettingsError
from m1lib.metrics import METRICS, MetricsRuntime
from m1lib.ops.cost import prices
from m1lib.ops.cost.prices import PriceTable, load_prices
from m1lib.ops.cost.record import EVENT_FIELDS, MAX_TOKENS, CostRecord, record_cost, total_usd
from m1lib.policy import PolicyEngine
from m1lib.settings import Settings
from tests.m1lib.test_attacks import SUBJECT, TOOL, forge
from tests.m1lib.test_tool_call import engine, revocations  # noqa: F401  (fixtures)

SONNET, HAIKU, OPUS = "claude-sonnet-4-5", "claude-haiku-4-5", "claude-opus-4-5"


@pytest.fixture
def table() -> Iterator[PriceTable]:
    """The built-in prices plus a half-micro-dollar model, as the process's table."""
    built = PriceTable(
        models={**prices.DEFAULT_MODEL_PRICES, "half": ("0.5", "0")}, tools={"web": "0.01"}
    )
    previous = prices.install_prices(built)
    yield built
    prices.install_prices(previous)


def cost_events(metrics: MetricsRuntime) -> list[dict[str, Any]]:
    assert metrics.flush()
    query = {
        "metric": "cost_updates",
        "timeRange": "1h",
        "groupBy": ["model", "toolName", "component"],
        "orderBy": [{"field": "model", "direction": "asc"}],
        "aggregations": [
            "count",
            {"op": "sum", "field": "costUsd", "as": "costUsd"},
            {"op": "sum", "field": "inputTokens", "as": "inputTokens"},
            {"op": "sum", "field": "outputTokens", "as": "outputTokens"},
        ],
    }
    return metrics.run_query(query).rows


def test_the_event_fields_are_the_schema_s_in_order() -> None:
    assert tuple(spec.name for spec in METRICS["cost_updates"].declared) == EVENT_FIELDS


def test_record_cost_is_exported_with_its_record() -> None:
    assert m1lib.record_cost is record_cost
    assert m1lib.CostRecord is CostRecord


def test_record_cost_returns_the_exact_record_and_records_the_event(
    table: PriceTable, metrics: MetricsRuntime
) -> None:
    record = m1lib.record_cost(SONNET, 1234, 567, tool_name="web_search", component="research")
    assert record == CostRecord(SONNET, "web_search", "research", 1234, 567, 12_207_000_000, 12207)
    assert record.cost_usd == Decimal("0.012207")  # 1234*3/1e6 + 567*15/1e6
    assert record.event_cost_usd == 0.012207
    assert cost_events(metrics) == [
        {"model": SONNET, "toolName": "web_search", "component": "research", "count": 1,
         "costUsd": 0.012207, "inputTokens": 1234, "outputTokens": 567}
    ]  # fmt: skip


def test_the_event_rounds_half_even_and_the_record_stays_exact(
    table: PriceTable, metrics: MetricsRuntime
) -> None:
    # 5 tokens at 0.5 USD per million: 2.5 µUSD, the event says 2 µUSD (even)
    record = record_cost("half", 5, 0, tool_name="t", component="c")
    assert record.cost_usd == Decimal("0.0000025")
    assert (record.cost_micro_usd, record.event_cost_usd) == (2, 0.000002)
    assert cost_events(metrics)[0]["costUsd"] == 0.000002
    assert record_cost("half", 7, 0, tool_name="t", component="c").event_cost_usd == 0.000004


def test_an_unknown_model_raises_listing_the_known_ones_and_records_nothing(
    table: PriceTable, metrics: MetricsRuntime
) -> None:
    with pytest.raises(InputError) as caught:
        record_cost("gpt-9", 10, 10, tool_name="t", component="c")
    assert caught.value.path == "model"
    assert caught.value.allowed == [HAIKU, OPUS, SONNET, "half"]
    assert str(caught.value).startswith("model: 'gpt-9' has no price")
    assert cost_events(metrics) == []


@pytest.mark.parametrize(
    ("kwargs", "path", "problem"),
    [
        ({"input_tokens": -1}, "input_tokens", "-1 is out of range"),
        ({"output_tokens": MAX_TOKENS + 1}, "output_tokens", "is out of range"),
        ({"input_tokens": 10**400}, "input_tokens", "is out of range"),
        ({"input_tokens": 10**5000}, "input_tokens", "an integer too long to show"),
        ({"output_tokens": True}, "output_tokens", "is a bool"),
        ({"input_tokens": 3.0}, "input_tokens", "float is not an int"),
        ({"input_tokens": "3"}, "input_tokens", "str is not an int"),
        ({"model": None}, "model", "missing"),
        ({"model": ["x"]}, "model", "list is not text"),
        ({"tool_name": ""}, "tool_name", "0 characters is out of range"),
        ({"tool_name": "x" * 129}, "tool_name", "129 characters is out of range"),
        ({"tool_name": ["x"]}, "tool_name", "list is not text"),
        ({"component": "a\x00b"}, "component", "a NUL character"),
        ({"component": "  "}, "component", "blank"),
        ({"component": None}, "component", "missing"),
    ],
)
def test_bad_input_names_the_field_and_records_nothing(
    table: PriceTable, metrics: MetricsRuntime, kwargs: dict[str, Any], path: str, problem: str
) -> None:
    call: dict[str, Any] = {"model": HAIKU, "input_tokens": 1, "output_tokens": 1,
                            "tool_name": "t", "component": "c"}  # fmt: skip
    call.update(kwargs)
    with pytest.raises(InputError) as caught:
        record_cost(**call)
    assert caught.value.path == path
    assert problem in caught.value.problem
    assert caught.value.allowed
    assert cost_events(metrics) == []


def test_numpy_integers_count_as_ints(table: PriceTable, metrics: MetricsRuntime) -> None:
    numpy = pytest.importorskip("numpy")
    record = record_cost(HAIKU, numpy.int64(1000), numpy.uint32(0), tool_name="t", component="c")
    assert (type(record.input_tokens), record.cost_micro_usd) == (int, 1000)
    assert cost_events(metrics)[0]["inputTokens"] == 1000


def test_the_most_tokens_allowed_are_recorded(table: PriceTable, metrics: MetricsRuntime) -> None:
    record = record_cost(OPUS, MAX_TOKENS, MAX_TOKENS, tool_name="t", component="c")
    assert record.cost_usd == Decimal(30_000_000)  # 1e6 millions at 5 + 25 USD
    assert cost_events(metrics)[0]["costUsd"] == 30_000_000.0


def test_the_process_table_is_read_from_settings_once(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, metrics: MetricsRuntime
) -> None:
    from m1lib.settings import get_settings

    path = tmp_path / "prices.json"
    path.write_text('{"models": {"mine": {"input": "2", "output": "0"}}}')
    monkeypatch.setenv("M1_COST_PRICES_FILE", str(path))
    get_settings.cache_clear()
    previous = prices.install_prices(None)
    try:
        assert record_cost("mine", 500, 0, tool_name="t", component="c").cost_micro_usd == 1000
        path.unlink()  # read once: no I/O on later calls
        assert record_cost("mine", 1, 0, tool_name="t", component="c").cost_micro_usd == 2
        assert prices.tool_call_price("anything") is None
        assert prices.hit_saving("anything") == 0
    finally:
        prices.install_prices(previous)
        get_settings.cache_clear()


# -- tool_call(...).cost -------------------------------------------------------------------------


def test_tool_call_cost_records_under_the_call_s_tool_and_component(
    engine: PolicyEngine,  # noqa: F811
    table: PriceTable,
    metrics: MetricsRuntime,
) -> None:
    with m1lib.tool_call(TOOL, "write", token=forge(), subject=SUBJECT, component="bot") as call:
        inside = call.cost(HAIKU, 200_000, 8_000)
    after = call.cost(SONNET, 1234, 567)  # tokens spent for the call, priced after it
    assert (inside.tool_name, inside.component, inside.cost_usd) == (TOOL, "bot", Decimal("0.24"))
    assert (after.tool_name, after.component, after.cost_usd) == (TOOL, "bot", Decimal("0.012207"))
    assert cost_events(metrics) == [
        {"model": HAIKU, "toolName": TOOL, "component": "bot", "count": 1, "costUsd": 0.24,
         "inputTokens": 200_000, "outputTokens": 8_000},
        {"model": SONNET, "toolName": TOOL, "component": "bot", "count": 1, "costUsd": 0.012207,
         "inputTokens": 1234, "outputTokens": 567},
    ]  # fmt: skip


def test_tool_call_cost_without_a_component_is_unattributed(
    engine: PolicyEngine,  # noqa: F811
    table: PriceTable,
    metrics: MetricsRuntime,
) -> None:
    async def run() -> CostRecord:
        async with m1lib.tool_call(TOOL, "write", token=forge(), subject=SUBJECT) as call:
            return call.cost(OPUS, 0, 1)

    record = asyncio.run(run())
    assert (record.component, record.cost_usd) == ("unattributed", Decimal("0.000025"))
    assert [row["component"] for row in cost_events(metrics)] == ["unattributed"]


def test_tool_call_cost_of_an_unknown_model_raises(
    engine: PolicyEngine,  # noqa: F811
    table: PriceTable,
    metrics: MetricsRuntime,
) -> None:
    with (
        pytest.raises(InputError, match="'nope' has no price"),
        m1lib.tool_call(TOOL, "write", token=forge(), subject=SUBJECT) as call,
    ):
        call.cost("nope", 1, 1)
    assert cost_events(metrics) == []


# -- sums are exact --------------------------------------------------------------------------


CALLS = st.lists(
    st.tuples(
        st.sampled_from([HAIKU, SONNET, OPUS, "half"]),
        st.integers(min_value=0, max_value=MAX_TOKENS),
        st.integers(min_value=0, max_value=10**6),
    ),
    max_size=20,
)


@settings(
    deadline=None, max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(calls=CALLS)
def test_the_sum_of_records_is_exact(
    table: PriceTable, metrics: MetricsRuntime, calls: list[tuple[str, int, int]]
) -> None:
    records = [record_cost(m, i, o, tool_name="t", component="c") for m, i, o in calls]
    expected = sum(
        (
            Fraction(i) * Fraction(table.models[m].input_usd_per_mtok) / 10**6
            + Fraction(o) * Fraction(table.models[m].output_usd_per_mtok) / 10**6
            for m, i, o in calls
        ),
        Fraction(0),
    )
    assert Fraction(total_usd(records)) == expected
    for record in records:  # each event is within half a micro-dollar of its exact cost
        assert abs(Fraction(record.cost_micro_usd, 10**6) - Fraction(record.cost_usd)) <= Fraction(
            1, 2 * 10**6
        )


def test_load_prices_default_matches_the_installed_defaults() -> None:
    assert load_prices().per_token == {HAIKU: (1_000_000, 5_000_000),
                                       OPUS: (5_000_000, 25_000_000),
                                       SONNET: (3_000_000, 15_000_000)}  # fmt: skip


def test_an_api_replica_refuses_to_start_with_a_bad_price_file(
    tmp_path: Any, make_settings: Callable[..., Settings]
) -> None:
    from m1lib.api.replica import ReplicaRuntime

    path = tmp_path / "prices.toml"
    path.write_text('[tools]\nweb = "-0.01"\n')
    with pytest.raises(SettingsError, match=r"tools\.web: '-0\.01' is out of range"):
        ReplicaRuntime.from_settings(make_settings(cost={"prices_file": path}))
