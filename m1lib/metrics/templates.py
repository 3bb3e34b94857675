"""Ready-made queries for the questions operators ask most; each is a valid :class:`Query`.

``GET /api/m1/dashboard/templates`` serves them; a dashboard fills in a template and posts it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from m1lib.errors import InputError
from m1lib.metrics.query import Query

__all__ = ["TEMPLATES", "Template", "template"]


@dataclass(frozen=True)
class Template:
    name: str
    title: str
    description: str
    query: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "description": self.description,
            "query": self.query,
        }


_DENIED = {"field": "allowed", "op": "eq", "value": False}

TEMPLATES: tuple[Template, ...] = (
    Template(
        "seed_example",
        "Denied decisions by tool and scope",
        "The seed's example: denied policy decisions of the last 24 h per tool and scope, with "
        "count and p50/p95/p99 of the check time.",
        {
            "metric": "policy_decisions",
            "timeRange": "24h",
            "groupBy": ["toolName", "scope"],
            "filters": [_DENIED],
            "aggregations": ["count", "percentiles"],
        },
    ),
    Template(
        "denied_decisions_by_tool",
        "Denied decisions by tool",
        "Which tools were denied in the last 24 h, most denied first, with the share denied.",
        {
            "metric": "policy_decisions",
            "timeRange": "24h",
            "groupBy": ["toolName"],
            "aggregations": [
                {"op": "ratio", "where": _DENIED, "as": "deniedShare"},
                {"op": "count", "as": "decisions"},
            ],
            "orderBy": [{"field": "deniedShare", "direction": "desc"}],
            "limit": 50,
        },
    ),
    Template(
        "denial_reasons",
        "Why decisions were denied",
        "Denied decisions of the last 24 h by reason.",
        {
            "metric": "policy_decisions",
            "timeRange": "24h",
            "groupBy": ["reason"],
            "filters": [_DENIED],
            "aggregations": ["count"],
            "orderBy": [{"field": "count", "direction": "desc"}],
        },
    ),
    Template(
        "cache_hit_rate_by_tool",
        "Cache hit rate by tool",
        "Share of cache reads that hit, per tool, over the last 24 h.",
        {
            "metric": "cache_operations",
            "timeRange": "24h",
            "groupBy": ["toolName"],
            "filters": [{"field": "op", "op": "eq", "value": "get"}],
            "aggregations": [
                {
                    "op": "ratio",
                    "where": {"field": "hit", "op": "eq", "value": True},
                    "as": "hitRate",
                },
                "count",
                "p95",
            ],
            "orderBy": [{"field": "hitRate", "direction": "asc"}],
        },
    ),
    Template(
        "tool_latency_p99_5m",
        "p99 tool latency by 5 minutes",
        "p99 duration of tool runs in 5-minute buckets over the last 24 h, with anomalies.",
        {
            "metric": "tool_executions",
            "timeRange": "24h",
            "interval": "5m",
            "aggregations": ["p99", "count"],
            "detect": {
                "trend": {"field": "p99"},
                "anomaly": {"field": "p99", "method": "mad", "window": 12, "threshold": 3.0},
            },
        },
    ),
    Template(
        "tool_failure_rate",
        "Tool failure rate",
        "Share of failed tool runs per tool over the last 24 h, worst first.",
        {
            "metric": "tool_executions",
            "timeRange": "24h",
            "groupBy": ["toolName"],
            "aggregations": [
                {
                    "op": "ratio",
                    "where": {"field": "success", "op": "eq", "value": False},
                    "as": "failShare",
                },
                "count",
                "p95",
            ],
            "having": [{"field": "count", "op": "gte", "value": 10}],
            "orderBy": [{"field": "failShare", "direction": "desc"}],
        },
    ),
    Template(
        "spend_by_model",
        "Spend by model",
        "Cost and tokens per model over the last 7 days.",
        {
            "metric": "cost_updates",
            "timeRange": "7d",
            "groupBy": ["model"],
            "aggregations": [
                {"op": "sum", "field": "costUsd", "as": "spendUsd"},
                {"op": "sum", "field": "inputTokens", "as": "inputTokens"},
                {"op": "sum", "field": "outputTokens", "as": "outputTokens"},
                "count",
            ],
            "orderBy": [{"field": "spendUsd", "direction": "desc"}],
        },
    ),
    Template(
        "spend_trend",
        "Hourly spend and its trend",
        "Spend per hour over the last 7 days and whether it is going up.",
        {
            "metric": "cost_updates",
            "timeRange": "7d",
            "interval": "1h",
            "aggregations": [{"op": "sum", "field": "costUsd", "as": "spendUsd"}],
            "detect": {"trend": {"field": "spendUsd"}},
        },
    ),
    Template(
        "error_alerts_by_level",
        "Error alerts by level",
        "Alerts per level per hour over the last 24 h, with bursts flagged.",
        {
            "metric": "error_alerts",
            "timeRange": "24h",
            "interval": "1h",
            "groupBy": ["level"],
            "aggregations": ["count"],
            "detect": {
                "anomaly": {"field": "count", "method": "zscore", "window": 6, "threshold": 2.0}
            },
        },
    ),
    Template(
        "unhealthy_components",
        "Unhealthy components",
        "Failed and degraded health checks per component over the last 24 h.",
        {
            "metric": "health_checks",
            "timeRange": "24h",
            "groupBy": ["component", "status"],
            "filters": [{"field": "status", "op": "ne", "value": "healthy"}],
            "aggregations": ["count", "p95"],
        },
    ),
)

_BY_NAME = {t.name: t for t in TEMPLATES}
for _template in TEMPLATES:
    Query.model_validate(_template.query)  # every template is valid, or importing fails loudly


def template(name: str) -> Query:
    """The query of template ``name``."""
    found = _BY_NAME.get(name)
    if found is None:
        raise InputError("template", f"{name!r} is not a template", sorted(_BY_NAME))
    return Query.model_validate(found.query)
