"""``m1lib.record_cost``: price one model call and record it as a ``cost_updates`` event.

::

    record = m1lib.record_cost("claude-sonnet-4-5", 1234, 567, tool_name="web_search",
                               component="research-agent")
    record.cost_usd  # Decimal("0.012207"): 1234 * 3 / 1e6 + 567 * 15 / 1e6, exact

On the hot path: no I/O, no Prefect; the process's price table is read once
(:func:`m1lib.ops.cost.prices.default_prices`), and the event is one append to the recorder's
queue, as :mod:`m1lib.tool_calls` does. The record keeps the exact cost (integer pico-dollars,
``cost_usd`` as a Decimal); the event's ``costUsd`` is that cost rounded half-even to the
micro-dollar, as a float (the nearest one to that decimal).
"""

from __future__ import annotations

import numbers
import time
from collections.abc import Iterable
from decimal import Decimal
from typing import Any, Final, NamedTuple

from m1lib.errors import InputError
from m1lib.metrics import pipeline as _pipeline
from m1lib.ops.cost import prices as _prices
from m1lib.ops.cost.prices import pusd_to_usd, round_micro
from m1lib.text import TOOL_MAX, check_text

__all__ = [
    "COMPONENT_MAX",
    "DEFAULT_COMPONENT",
    "EVENT_FIELDS",
    "MAX_TOKENS",
    "CostRecord",
    "record_cost",
    "total_usd",
]

MAX_TOKENS: Final = 10**12
"""Most tokens one call may count, in or out: far beyond any context window, and small enough
that a cost and its event stay exact (the event's int fields hold up to 2**53)."""
COMPONENT_MAX: Final = 128
DEFAULT_COMPONENT: Final = "unattributed"
"""The component of a ``tool_call(...).cost`` whose ``tool_call`` was given none."""
EVENT_FIELDS: Final = ("model", "toolName", "component", "inputTokens", "outputTokens", "costUsd")
"""The values :func:`record_cost` queues, in the order of ``METRICS["cost_updates"]`` (a test
keeps them equal)."""

_COST_UPDATES: Final = "cost_updates"
_TOKENS_ALLOWED: Final = [f"an int from 0 to {MAX_TOKENS} (not a bool)"]
_time_ns = time.time_ns
_tuple_new = tuple.__new__
# Names already checked (tool names and components are few and repeat): a set lookup instead of a
# regex per call. Bounded: cleared when full, then filled again by the names in use.
_CHECKED_NAMES: set[str] = set()
_CHECKED_MAX: Final = 4096


class CostRecord(NamedTuple):
    """What one model call cost, exactly; :func:`record_cost` returns it.

    ``cost_pusd`` is the exact cost in pico-dollars (1e-12 USD), ``cost_usd`` the same as a Decimal;
    sum records with :func:`total_usd` (exact). ``cost_micro_usd`` is the cost rounded half-even to
    whole micro-dollars, what the ``cost_updates`` event carries (``event_cost_usd``).
    """

    model: str
    tool_name: str
    component: str
    input_tokens: int
    output_tokens: int
    cost_pusd: int
    cost_micro_usd: int

    @property
    def cost_usd(self) -> Decimal:
        """The exact cost in USD."""
        return pusd_to_usd(self.cost_pusd)

    @property
    def event_cost_usd(self) -> float:
        """The event's ``costUsd``: the cost rounded half-even to the micro-dollar, as a float."""
        return self.cost_micro_usd / 1e6


def record_cost(
    model: str, input_tokens: int, output_tokens: int, *, tool_name: str, component: str
) -> CostRecord:
    """Price a model call with the process's price table and record a ``cost_updates`` event.

    Raises InputError (nothing recorded): ``model`` without a price (the message lists the models
    that have one; never a silent zero), token counts that are not ints from 0 to
    :data:`MAX_TOKENS` (bools refused; numpy integers taken as ints), ``tool_name`` or ``component`` not 1-128 characters of text
    without control characters. SettingsError on the first call of a process whose
    ``M1_COST_PRICES_FILE`` is bad (an API replica refuses to start instead). Never blocks: a full
    queue drops the event and counts it.
    """
    table = _prices._table_in_use or _prices.default_prices()
    try:
        input_price, output_price = table.per_token[model]
    except (KeyError, TypeError):
        if not isinstance(model, str):
            check_text("model", model, _prices.MODEL_MAX, required=True)
        raise table.unknown_model(model) from None
    if type(input_tokens) is not int or not 0 <= input_tokens <= MAX_TOKENS:
        input_tokens = _tokens("input_tokens", input_tokens)
    if type(output_tokens) is not int or not 0 <= output_tokens <= MAX_TOKENS:
        output_tokens = _tokens("output_tokens", output_tokens)
    try:
        checked = tool_name in _CHECKED_NAMES and component in _CHECKED_NAMES
    except TypeError:  # unhashable: not text, _check_names says so
        checked = False
    if not checked:
        _check_names(tool_name, component)
    pusd = input_tokens * input_price + output_tokens * output_price
    micro = round_micro(pusd)
    # Recorder.record_trusted inlined (one call less): the row as its declared fields.
    row = (
        _time_ns() // 1000,
        model,
        tool_name,
        component,
        input_tokens,
        output_tokens,
        micro / 1e6,
    )
    (_pipeline._default or _pipeline.default_runtime()).recorder._enqueue((_COST_UPDATES, row))
    return _tuple_new(
        CostRecord, (model, tool_name, component, input_tokens, output_tokens, pusd, micro)
    )


def total_usd(records: Iterable[CostRecord]) -> Decimal:
    """The exact sum of the records' costs (integer pico-dollars summed, then as a Decimal)."""
    return pusd_to_usd(sum(record.cost_pusd for record in records))


def _tokens(path: str, value: Any) -> int:
    """What the fast check let through: another integer type (numpy's) as an int, else the error."""
    if isinstance(value, bool):
        raise InputError(path, "is a bool", _TOKENS_ALLOWED)
    if not isinstance(value, numbers.Integral):
        raise InputError(path, f"{type(value).__name__} is not an int", _TOKENS_ALLOWED)
    count = int(value)
    if not 0 <= count <= MAX_TOKENS:
        raise InputError(path, f"{_prices._shown(count)} is out of range", _TOKENS_ALLOWED)
    return count


def _check_names(tool_name: Any, component: Any) -> None:
    check_text("tool_name", tool_name, TOOL_MAX, required=True)
    check_text("component", component, COMPONENT_MAX, required=True)
    if len(_CHECKED_NAMES) >= _CHECKED_MAX:
        _CHECKED_NAMES.clear()
    _CHECKED_NAMES.add(tool_name)
    _CHECKED_NAMES.add(component)
