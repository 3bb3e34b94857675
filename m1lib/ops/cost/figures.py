"""A tool's cache figures from the metrics: what the TTL guard compares before and after a change.

Per tool over ``[start, end)``: ``hit_rate`` of its ``cache_operations`` gets, ``error_rate`` of its
``tool_executions``, ``spend_usd`` of its ``cost_updates``. ``stale_rate`` is not in the events:
whether a hit was stale is known only at the key's refetch, in the process that filled it, so it
comes from the counters the processes publish (:mod:`m1lib.ops.cost.staleness`, suspect hits /
hits, an upper bound) and :func:`with_stale_rates` adds it. A tool with no events of a kind gets
None there, and the guard does not judge a figure missing on either side.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any, Final, Protocol

from m1lib.ops.cost.policy import Figures

__all__ = ["QueryFn", "fetch_figures", "figures_from_rows", "figures_queries", "with_stale_rates"]

_ROWS: Final = 10_000  # tools per query: far beyond a registry's size


class _Result(Protocol):
    @property
    def rows(self) -> list[dict[str, Any]]: ...


QueryFn = Callable[[Mapping[str, Any]], _Result]
"""Runs one dashboard query (``MetricsRuntime.run_query``, or the API's ``POST .../query``)."""


def figures_queries(start: datetime, end: datetime) -> dict[str, dict[str, Any]]:
    """The three queries, by figure: one row per tool each."""
    window = {"from": start.isoformat(), "to": end.isoformat()}

    def per_tool(metric: str, aggregation: dict[str, Any], **extra: Any) -> dict[str, Any]:
        return {"metric": metric, "timeRange": window, "groupBy": ["toolName"],
                "aggregations": ["count", aggregation], "limit": _ROWS, **extra}  # fmt: skip

    return {
        "hit_rate": per_tool(
            "cache_operations",
            {"op": "ratio", "where": {"field": "hit", "op": "eq", "value": True}, "as": "rate"},
            filters=[{"field": "op", "op": "eq", "value": "get"}],
        ),
        "error_rate": per_tool(
            "tool_executions",
            {
                "op": "ratio",
                "where": {"field": "success", "op": "eq", "value": False},
                "as": "rate",
            },
        ),
        "spend_usd": per_tool("cost_updates", {"op": "sum", "field": "costUsd", "as": "rate"}),
    }


def figures_from_rows(rows: Mapping[str, Iterable[Mapping[str, Any]]]) -> dict[str, Figures]:
    """Figures per tool from each query's rows (``{figure: rows}``); pure."""
    found: dict[str, dict[str, float]] = {}
    for figure, figure_rows in rows.items():
        for row in figure_rows:
            tool = row.get("toolName")
            if tool is not None and row.get("rate") is not None and row.get("count"):
                found.setdefault(str(tool), {})[figure] = float(row["rate"])
    return {tool: Figures(**values) for tool, values in sorted(found.items())}


def fetch_figures(query: QueryFn, start: datetime, end: datetime) -> dict[str, Figures]:
    """Every tool's figures over ``[start, end)``, three queries."""
    queries = figures_queries(start, end)
    return figures_from_rows({figure: query(q).rows for figure, q in queries.items()})


def with_stale_rates(
    figures: Mapping[str, Figures], stale: Mapping[str, float]
) -> dict[str, Figures]:
    """``figures`` with each tool's measured stale rate filled in (a tool with only a stale rate
    gets figures of its own); pure."""
    merged = dict(figures)
    for tool, rate in stale.items():
        merged[tool] = replace(merged.get(tool, Figures()), stale_rate=rate)
    return dict(sorted(merged.items()))
