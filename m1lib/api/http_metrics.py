"""Request counts and latencies per route template, counted in memory for ``GET /metrics``.

An ASGI middleware outermost in the stack times each HTTP request and counts it by route
template (``/api/m1/tokens/{jti}/status``, never the raw path), method and status class. Label
values are bounded so a scanner cannot grow the exposition: a path no route matches is counted
under ``unmatched``, a method outside the standard ones under ``other``. The middleware does no
I/O: it adds a few dictionary updates under a lock to each request, and ``GET /metrics`` reads a
copy (:meth:`HttpMetrics.snapshot`).

The latency is the time until the application returns, so for a streaming response (Server-Sent
Events) it is the length of the connection.
"""

from __future__ import annotations

import re
import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from fastapi import routing as fastapi_routing
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "LATENCY_BUCKETS_S",
    "OTHER_METHOD",
    "UNMATCHED",
    "HttpMetrics",
    "HttpSnapshot",
    "RequestMetricsMiddleware",
    "RouteTemplates",
]

LATENCY_BUCKETS_S: Final = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)  # upper bounds in seconds; +Inf follows
UNMATCHED: Final = "unmatched"  # the route label of every path no route matches
OTHER_METHOD: Final = "other"  # the method label of every non-standard method
_SEEN_MAX: Final = 1024  # paths whose template is remembered (matching costs ~10 us)
_METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


@dataclass
class _Latency:
    buckets: list[int]  # per bucket, not cumulative; the last is +Inf
    sum_s: float = 0.0


@dataclass(frozen=True)
class HttpSnapshot:
    """A consistent copy of the counts: requests by (route, method, status class), latency by
    (route, method) as cumulative bucket counts (one per :data:`LATENCY_BUCKETS_S`, then +Inf)
    and the sum in seconds."""

    requests: dict[tuple[str, str, str], int]
    latency: dict[tuple[str, str], tuple[list[int], float]]


class HttpMetrics:
    """This app's request counts; one per app, so apps in one process count apart."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # the event loop observes, a scrape's thread reads
        self._requests: dict[tuple[str, str, str], int] = {}
        self._latency: dict[tuple[str, str], _Latency] = {}

    def observe(self, route: str, method: str, status: int | None, seconds: float) -> None:
        """Count one request; ``status`` None means no response was started (a 5xx)."""
        status_class = "5xx" if status is None else f"{status // 100}xx"
        bucket = bisect_left(LATENCY_BUCKETS_S, seconds)
        with self._lock:
            key = (route, method, status_class)
            self._requests[key] = self._requests.get(key, 0) + 1
            latency = self._latency.get((route, method))
            if latency is None:
                latency = self._latency[(route, method)] = _Latency(
                    [0] * (len(LATENCY_BUCKETS_S) + 1)
                )
            latency.buckets[bucket] += 1
            latency.sum_s += seconds

    def snapshot(self) -> HttpSnapshot:
        with self._lock:
            requests = dict(self._requests)
            raw = {key: (list(v.buckets), v.sum_s) for key, v in self._latency.items()}
        latency: dict[tuple[str, str], tuple[list[int], float]] = {}
        for key, (buckets, sum_s) in raw.items():
            total, cumulative = 0, []
            for n in buckets:
                total += n
                cumulative.append(total)
            latency[key] = (cumulative, sum_s)
        return HttpSnapshot(requests=requests, latency=latency)


def _route_path(scope: Scope) -> str:
    """The path the router matches: ``path`` without the ``root_path`` it was served under."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] in ("/", ""):
        return path[len(root) :] or "/"
    return path


def _effective_routes(routes: Sequence[BaseRoute]) -> Iterable[Any]:
    """Every route with its full path, as the router tries them: FastAPI 0.150 nests an
    included router as one entry of ``app.routes`` and lists its routes through
    ``iter_route_contexts``; older versions copy them into ``app.routes``."""
    contexts: Callable[[Sequence[BaseRoute]], Iterable[Any]] | None = getattr(
        fastapi_routing, "iter_route_contexts", None
    )
    return routes if contexts is None else contexts(routes)


class RouteTemplates:
    """Which route template a request path belongs to, from the app's own routes.

    Templates are ``path_format`` (``/api/m1/tokens/{jti}/status``: converters dropped;
    ``/docs/assets/{path}`` for a mount). A route answering the path for another method counts
    too (its 405 belongs to that path); a path no route has is :data:`UNMATCHED`. The table is
    built on first use and again when the app gains routes.
    """

    def __init__(self) -> None:
        self._built_for = -1
        self._table: list[tuple[re.Pattern[str], frozenset[str] | None, str]] = []
        self._seen: dict[tuple[str, str], str] = {}  # (path, method) -> template, bounded

    def _build(self, routes: Sequence[BaseRoute]) -> None:
        table = []
        for route in _effective_routes(routes):
            regex, template = getattr(route, "path_regex", None), getattr(route, "path_format", "")
            if isinstance(regex, re.Pattern) and template:
                methods = getattr(route, "methods", None)
                table.append((regex, frozenset(methods) if methods else None, str(template)))
        self._table, self._built_for = table, len(routes)

    def template(self, scope: Scope) -> str:
        routes: Sequence[BaseRoute] = getattr(
            getattr(scope.get("app"), "router", None), "routes", ()
        )
        if len(routes) != self._built_for:
            self._build(routes)
            self._seen = {}
        path, method = _route_path(scope), scope["method"]
        key = (path, method)
        template = self._seen.get(key)
        if template is None:
            if len(self._seen) >= _SEEN_MAX:  # a scanner's paths: start again, stay bounded
                self._seen = {}
            template = self._seen[key] = self._match(path, method)
        return template

    def _match(self, path: str, method: str) -> str:
        found = UNMATCHED
        for regex, methods, template in self._table:
            if regex.match(path):
                if methods is None or method in methods:
                    return template
                if found is UNMATCHED:
                    found = template
        return found


class RequestMetricsMiddleware:
    """ASGI middleware: count and time every HTTP request into ``metrics``."""

    def __init__(self, app: ASGIApp, *, metrics: HttpMetrics) -> None:
        if not isinstance(metrics, HttpMetrics):
            raise TypeError(f"metrics: expected HttpMetrics, not {type(metrics).__name__}")
        self.app = app
        self.metrics = metrics
        self.templates = RouteTemplates()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status: int | None = None

        async def send_counted(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        asked = dict(scope)  # as received: routing rewrites root_path and path_params in place
        started = time.perf_counter()
        try:
            await self.app(scope, receive, send_counted)
        finally:
            elapsed = time.perf_counter() - started  # matched after: the response is on its way
            method = asked["method"] if asked["method"] in _METHODS else OTHER_METHOD
            self.metrics.observe(self.templates.template(asked), method, status, elapsed)
