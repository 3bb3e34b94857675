"""Events and analytics: record what agents and caches do, and ask questions of it.

>>> from m1lib.metrics import record_event, run_query
>>> record_event("policy_decisions", toolName="web_search", scope="read", allowed=False,
...              reason="revoked", subject="agent-7", checkMs=0.42)
>>> run_query({"metric": "policy_decisions", "timeRange": "24h", "groupBy": ["toolName"],
...            "aggregations": ["count", "p99"]}).rows

Modules, one job each: ``schema`` (the six metrics), ``recorder`` (validation and the bounded
queue), ``columns``/``rollup``/``store`` (columnar storage), ``sketch`` (mergeable percentiles),
``codec``/``persist``/``stream`` (bytes, database, Redis), ``query``/``filters``/``plan``/``engine``
(the DSL and its execution), ``result``, ``detect``, ``templates``, ``pipeline`` (lifecycle).
Importing this package starts nothing.

``engine`` runs a query in steps of their own modules: ``grouping`` (parts and group keys),
``aggregate`` (per-group reductions), ``postprocess`` (having, order, detection). ``slab`` is the
interface raw chunks and rollup blocks share.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from m1lib.metrics import detect
from m1lib.metrics import pipeline as _pipeline
from m1lib.metrics.pipeline import (
    MetricsRuntime,
    default_runtime,
    install_default,
    register_metrics_commands,
)
from m1lib.metrics.query import Query, parse_query, query_json_schema
from m1lib.metrics.result import Anomaly, QueryMeta, QueryResult, Trend
from m1lib.metrics.schema import METRICS
from m1lib.metrics.sketch import RELATIVE_ERROR
from m1lib.metrics.store import EventStore
from m1lib.metrics.templates import TEMPLATES, template

__all__ = [
    "METRICS",
    "RELATIVE_ERROR",
    "TEMPLATES",
    "Anomaly",
    "EventStore",
    "MetricsRuntime",
    "Query",
    "QueryMeta",
    "QueryResult",
    "Trend",
    "default_runtime",
    "detect",
    "install_default",
    "parse_query",
    "query_json_schema",
    "record_event",
    "record_events",
    "register_metrics_commands",
    "run_query",
    "template",
]


def record_event(metric: str, /, *, timestamp: Any = None, **fields: Any) -> None:
    """Record one event on the default runtime; never blocks (a full queue drops and counts)."""
    (_pipeline._default or default_runtime()).recorder.record(metric, timestamp, fields)


def record_events(events: Iterable[Mapping[str, Any]]) -> int:
    """Record many events (``{"metric", "timestamp"?, **fields}``); returns how many were queued."""
    return (_pipeline._default or default_runtime()).recorder.record_events(events)


def run_query(query: Query | Mapping[str, Any] | str) -> QueryResult:
    """Answer a query (model, mapping or JSON text) from the default runtime's store."""
    return (_pipeline._default or default_runtime()).run_query(query)
