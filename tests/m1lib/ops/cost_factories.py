"""Cells and analyses built by hand for the cost tests."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from m1lib.ops.cost.analysis import CostCell


def cell(hour: datetime, micros: int, **overrides: Any) -> CostCell:
    """One hour of one operation: 1 call, no tokens, ``micros`` spent, unless told otherwise."""
    values: dict[str, Any] = {
        "hour": hour,
        "model": "claude-opus-4-5",
        "tool_name": "web_search",
        "component": "agent",
        "calls": 1,
        "micros": micros,
        "input_tokens": 0,
        "output_tokens": 0,
        "max_call_micros": micros,
    }
    values.update(overrides)
    return CostCell(**values)
