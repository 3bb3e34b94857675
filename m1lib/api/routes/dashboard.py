"""Dashboard queries over HTTP: run a query, list the templates, publish the DSL's JSON schema.

The body is the :class:`~m1lib.metrics.query.Query` model, so a body that does not validate is a
422 whose errors name each JSON path (``/filters/0/op``); a valid query the store cannot answer
(unknown field for the metric, past the raw retention, over a guard) is a 400 from ``InputError``.
A query is CPU work: it runs on a worker thread, and stops when its client disconnects. The role
dependency is added where the router is included; the query route also takes the session cookie of
the dashboard page (with its CSRF checks, ``m1lib.api.deps.accepts_session_post``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

import anyio
import anyio.to_thread
from fastapi import APIRouter, Request

from m1lib.api.bodies import body_route
from m1lib.api.deps import accepts_session_post
from m1lib.api.openapi import AUTHENTICATED, problems
from m1lib.errors import M1Error, UnavailableError
from m1lib.metrics import TEMPLATES, MetricsRuntime, Query, query_json_schema

# A query with many long `in` lists is larger than a token request; a megabyte is plenty.
router = APIRouter(
    prefix="/api/m1/dashboard", tags=["dashboard"], route_class=body_route(1024 * 1024)
)
T = TypeVar("T")


def metrics_of(request: Request) -> MetricsRuntime:
    """The replica's metrics runtime (``app.state.runtime.metrics``)."""
    metrics: MetricsRuntime | None = getattr(request.app.state.runtime, "metrics", None)
    if metrics is None:
        raise UnavailableError("the event store is not running on this replica", retry_after_s=5)
    return metrics


@router.post(
    "/query",
    summary="Run a dashboard query (the DSL of docs/contracts.md)",
    responses=problems(
        *AUTHENTICATED,
        400,
        413,
        422,
        why={
            400: "A valid query the store cannot answer (a field the metric lacks, past the "
            "raw retention, over an M1_QUERY_* guard); `errors` names the member.",
            503: "The event store is not running here, the replica runs as many queries as it "
            "may, or the credentials are unavailable.",
        },
    ),
)
@accepts_session_post
async def run_query(request: Request, query: Query) -> dict[str, Any]:
    """Rows, trend, anomalies and meta of ``query``, JSON-ready (buckets as ISO-8601).

    The query computes on a worker thread while this coroutine listens to the connection: a
    client that disconnects cancels the query at its next step instead of leaving it to run.
    """
    metrics = metrics_of(request)
    return await _until_disconnect(
        request, lambda cancel: metrics.run_query(query, cancel=cancel).to_dict()
    )


async def _until_disconnect(request: Request, work: Callable[[threading.Event], T]) -> T:
    """``work(cancel)`` on a worker thread; ``cancel`` is set if the client disconnects first."""
    cancel = threading.Event()
    outcome: list[T] = []
    failure: list[M1Error] = []

    def run() -> None:
        try:
            outcome.append(work(cancel))
        except M1Error as error:  # raised below, outside the task group's ExceptionGroup
            failure.append(error)

    async with anyio.create_task_group() as watchers:
        watchers.start_soon(_cancel_on_disconnect, request, cancel)
        try:
            await anyio.to_thread.run_sync(run)
        finally:
            watchers.cancel_scope.cancel()
    if failure:
        raise failure[0]
    return outcome[0]


async def _cancel_on_disconnect(request: Request, cancel: threading.Event) -> None:
    """Set ``cancel`` when the client goes away (the body is read: only a disconnect is left)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
    cancel.set()


@router.get("/templates", summary="Ready-made queries", responses=problems(*AUTHENTICATED))
def templates() -> dict[str, Any]:
    return {"templates": [t.to_dict() for t in TEMPLATES]}


@router.get("/schema", summary="JSON schema of the query DSL", responses=problems(*AUTHENTICATED))
def schema() -> dict[str, Any]:
    return query_json_schema()
