"""``GET /metrics``: this replica's own figures, exposed with ``prometheus_client``.

One :class:`ReplicaCollector` per app, registered in a :class:`CollectorRegistry` of the app's
own (never the process-wide default, so several apps in one process never share or collide),
reads the replica's figures at each scrape and ``generate_latest`` writes the text: values
keep every digit, HELP texts and label values are escaped by the library.

Every series carries a ``replica`` label, since each process counts only what it saw; a
Prometheus scraping several replicas sums or compares them. Viewer credentials are needed
unless ``M1_METRICS_PUBLIC`` is set.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import psutil
from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.responses import PlainTextResponse
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from m1lib.api.bodies import BodyRoute
from m1lib.api.deps import require_viewer, runtime_of
from m1lib.api.http_metrics import LATENCY_BUCKETS_S, HttpMetrics, RequestMetricsMiddleware
from m1lib.api.openapi import AUTHENTICATED, problems
from m1lib.api.replica import ReplicaRuntime

__all__ = ["CONTENT_TYPE", "ReplicaCollector", "install_metrics", "set_stream_clients"]

router = APIRouter(tags=["operations"], route_class=BodyRoute)
# The text format generate_latest writes, under the type the library itself pairs it with when a
# scraper asks for nothing else (exposition.choose_encoder); Prometheus 2 and 3 both read it.
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
_LE = [repr(b) for b in LATENCY_BUCKETS_S] + ["+Inf"]  # as the library writes le: 0.001 .. 10.0

StreamClients = Callable[[], int]


class ReplicaCollector(Collector):
    """The figures of the replica serving ``app``, read at each scrape.

    ``stream_clients`` is the hook of the live stream: it registers a callable returning its
    connected clients (:func:`set_stream_clients`); until then ``m1_stream_clients`` reads 0.
    """

    def __init__(self, app: FastAPI, http: HttpMetrics) -> None:
        self.app = app
        self.http = http
        self.stream_clients: StreamClients | None = None
        self.registry = CollectorRegistry()
        self.registry.register(self)

    def collect(self) -> Iterator[Metric]:
        runtime: ReplicaRuntime | None = getattr(self.app.state, "runtime", None)
        if runtime is None:  # before the lifespan: nothing is served yet
            return
        replica = runtime.settings.replica_id
        yield from _replica_figures(runtime, replica)
        yield from _events_shared(runtime, replica)
        yield from _http_figures(self.http, replica)
        clients = GaugeMetricFamily(
            "m1_stream_clients",
            "Clients connected to the live dashboard stream of this replica.",
            labels=["replica"],
        )
        count = self.stream_clients
        clients.add_metric([replica], float(count() if count is not None else 0))
        yield clients


def _gauge(name: str, help_text: str, replica: str, value: float) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, help_text, labels=["replica"])
    family.add_metric([replica], value)
    return family


def _counter(name: str, help_text: str, replica: str, value: float) -> CounterMetricFamily:
    family = CounterMetricFamily(name, help_text, labels=["replica"])
    family.add_metric([replica], value)
    return family


def _replica_figures(runtime: ReplicaRuntime, replica: str) -> Iterator[Metric]:
    """The series ``/metrics`` has served since before prometheus_client: names, types, labels
    and HELP texts are what dashboards know, so they do not change."""
    metrics = runtime.metrics
    revocation = runtime.revocations.status()
    cache = runtime.cache.stats()
    tiers = metrics.store.stats()
    yield _counter(
        "m1_events_dropped_total",
        "Events dropped: the recording queue was full, or ingest refused or failed to store them.",
        replica,
        metrics.dropped_events,
    )
    by_reason = CounterMetricFamily(
        "m1_events_dropped_by_reason_total",
        "Events dropped, by reason: queue_full, invalid:<metric>.<field>, store_error, "
        "batch_handler.",
        labels=["replica", "reason"],
    )
    for reason, n in sorted(metrics.drops.items()):
        by_reason.add_metric([replica, reason], n)
    yield by_reason
    queries = dict(metrics.query_counts)
    yield _gauge(
        "m1_queries_running",
        "Dashboard queries computing now (at most M1_QUERY_MAX_CONCURRENT).",
        replica,
        queries.pop("running"),
    )
    outcomes = CounterMetricFamily(
        "m1_queries_total",
        "Queries by outcome: completed, refused_input (a 4xx, guards included), refused_busy "
        "(503: the replica was at its limit), cancelled (the client went away).",
        labels=["replica", "outcome"],
    )
    for outcome, n in sorted(queries.items()):
        outcomes.add_metric([replica, outcome], n)
    yield outcomes
    yield _gauge(
        "m1_events_queued", "Events waiting to be stored.", replica, metrics.recorder.queued
    )
    yield _gauge(
        "m1_event_store_lag_seconds",
        "Age of the oldest event not yet in the store.",
        replica,
        metrics.store_lag_s,
    )
    points = GaugeMetricFamily(
        "m1_event_store_points",
        "Points held per metric and resolution.",
        labels=["replica", "metric", "resolution"],
    )
    held = GaugeMetricFamily(
        "m1_event_store_bytes",
        "Bytes held per metric and resolution.",
        labels=["replica", "metric", "resolution"],
    )
    for tier in tiers:
        points.add_metric([replica, tier.metric, tier.resolution], tier.points)
        held.add_metric([replica, tier.metric, tier.resolution], tier.bytes)
    yield points
    yield held
    yield _gauge(
        "m1_revocation_ready",
        "1 when the revocation state is loaded and fresh.",
        replica,
        float(revocation.ready),
    )
    yield _gauge(
        "m1_revocation_sync_age_seconds",
        "Seconds since the last successful revocation resync (-1 before the first).",
        replica,
        -1.0 if revocation.sync_age_s is None else revocation.sync_age_s,
    )
    yield _gauge(
        "m1_revoked_jtis", "Revoked jtis held in memory.", replica, revocation.revoked_jtis
    )
    yield _gauge(
        "m1_revocation_rules", "Not-before rules held in memory.", replica, revocation.rules
    )
    backend = GaugeMetricFamily(
        "m1_cache_backend", "1 for the cache backend in use.", labels=["replica", "backend"]
    )
    for name in ("redis", "memory"):
        backend.add_metric([replica, name], float(cache.backend == name))
    yield backend
    yield _counter("m1_cache_hits_total", "Cache hits.", replica, cache.hits)
    yield _counter("m1_cache_misses_total", "Cache misses.", replica, cache.misses)
    yield _gauge(
        "m1_ratelimit_backend_redis",
        "1 when rate limits are shared through Redis, 0 when counted in memory.",
        replica,
        float(runtime.limiter.backend == "redis"),
    )
    yield _gauge(
        "m1_process_resident_memory_bytes",
        "Resident memory of this process.",
        replica,
        psutil.Process(os.getpid()).memory_info().rss,
    )


def _events_shared(runtime: ReplicaRuntime, replica: str) -> Iterator[Metric]:
    """What became of this replica's recorded events after the store: sent to the other
    replicas (the shared Redis stream) or given up, and given up before persistence."""
    publisher = runtime.metrics.publisher
    yield _counter(
        "m1_events_published_total",
        "Events this replica put on the shared Redis stream for the other replicas "
        "(0 without Redis).",
        replica,
        publisher.published_events if publisher is not None else 0,
    )
    yield _counter(
        "m1_events_unpublished_total",
        "Events never put on the shared stream: the outbox overflowed while Redis was unreachable.",
        replica,
        publisher.unpublished_events if publisher is not None else 0,
    )
    yield _counter(
        "m1_events_unpersisted_total",
        "Events never persisted: the batches waiting for the database overflowed.",
        replica,
        runtime.metrics.unpersisted_events,
    )


def _http_figures(http: HttpMetrics, replica: str) -> Iterator[Metric]:
    snapshot = http.snapshot()
    requests = CounterMetricFamily(
        "m1_http_requests_total",
        "HTTP requests answered, by route template (unmatched: no route), method (other: not a "
        "standard one) and status class (5xx also when no response was started).",
        labels=["replica", "route", "method", "status_class"],
    )
    for (route, method, status_class), n in sorted(snapshot.requests.items()):
        requests.add_metric([replica, route, method, status_class], n)
    yield requests
    latency = HistogramMetricFamily(
        "m1_http_request_duration_seconds",
        "Time to answer an HTTP request, by route template and method (a stream: its length).",
        labels=["replica", "route", "method"],
    )
    for (route, method), (cumulative, sum_s) in sorted(snapshot.latency.items()):
        latency.add_metric([replica, route, method], list(zip(_LE, cumulative, strict=True)), sum_s)
    yield latency


def install_metrics(app: FastAPI) -> ReplicaCollector:
    """Count this app's requests and give it its own registry (``app.state.prometheus``).

    Call it after every other middleware, so the count covers the whole stack (CORS preflights
    and HEAD included) and the time what the client waits for.
    """
    http = HttpMetrics()
    app.add_middleware(RequestMetricsMiddleware, metrics=http)
    collector = ReplicaCollector(app, http)
    app.state.prometheus = collector
    return collector


def set_stream_clients(app: FastAPI, count: StreamClients | None) -> None:
    """The live stream registers how to count its clients (None when it closes)."""
    collector: ReplicaCollector = app.state.prometheus
    collector.stream_clients = count


def _metrics_access(request: Request) -> None:
    if not runtime_of(request).settings.metrics.public:
        require_viewer(request, None)


@router.get(
    "/metrics",
    summary="Prometheus text: this replica's figures, each with a replica label",
    response_class=PlainTextResponse,
    dependencies=[Depends(_metrics_access)],
    responses=problems(*AUTHENTICATED),
)
def metrics(request: Request) -> Response:
    collector: ReplicaCollector = request.app.state.prometheus
    return Response(generate_latest(collector.registry), media_type=CONTENT_TYPE)
