"""Dashboard queries over HTTP: run a query, list the templates, publish the DSL's JSON schema.

The body is the :class:`~m1lib.metrics.query.Query` model, so a body that does not validate is a
422 whose errors name each JSON path (``/filters/0/op``); a valid query the store cannot answer
(unknown field for the metric, past the raw retention, over a guard) is a 400 from ``InputError``.
Handlers are plain ``def``: a query is CPU work and runs in the threadpool. The role dependency is
added where the router is included.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from m1lib.errors import UnavailableError
from m1lib.metrics import TEMPLATES, MetricsRuntime, Query, query_json_schema

router = APIRouter(prefix="/api/m1/dashboard", tags=["dashboard"])


def metrics_of(request: Request) -> MetricsRuntime:
    """The replica's metrics runtime (``app.state.runtime.metrics``)."""
    metrics: MetricsRuntime | None = getattr(request.app.state.runtime, "metrics", None)
    if metrics is None:
        raise UnavailableError("the event store is not running on this replica", retry_after_s=5)
    return metrics


@router.post("/query", summary="Run a dashboard query (the DSL of docs/contracts.md)")
def run_query(request: Request, query: Query) -> dict[str, Any]:
    """Rows, trend, anomalies and meta of ``query``, JSON-ready (buckets as ISO-8601)."""
    return metrics_of(request).run_query(query).to_dict()


@router.get("/templates", summary="Ready-made queries")
def templates() -> dict[str, Any]:
    return {"templates": [t.to_dict() for t in TEMPLATES]}


@router.get("/schema", summary="JSON schema of the query DSL")
def schema() -> dict[str, Any]:
    return query_json_schema()
