"""``GET /metrics``: this replica's own figures in the Prometheus text format.

Every series carries a ``replica`` label, since each process counts only what it saw; a
Prometheus scraping several replicas sums or compares them. Viewer credentials are needed
unless ``M1_METRICS_PUBLIC`` is set.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import psutil
from fastapi import APIRouter, Depends, Request
from fastapi.responses import PlainTextResponse

from m1lib.api.bodies import BodyRoute
from m1lib.api.deps import require_viewer, runtime_of
from m1lib.api.openapi import AUTHENTICATED, problems
from m1lib.api.replica import ReplicaRuntime

router = APIRouter(tags=["operations"], route_class=BodyRoute)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _series(
    name: str, kind: str, help_text: str, samples: Iterable[tuple[dict[str, str], float]]
) -> list[str]:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
    for labels, value in samples:
        text = ",".join(f'{key}="{_escape(val)}"' for key, val in sorted(labels.items()))
        lines.append(f"{name}{{{text}}} {value:g}")
    return lines


def render(runtime: ReplicaRuntime) -> str:
    replica = {"replica": runtime.settings.replica_id}
    metrics = runtime.metrics
    revocation = runtime.revocations.status()
    cache = runtime.cache.stats()
    tiers = metrics.store.stats()
    lines: list[str] = []
    lines += _series(
        "m1_events_dropped_total",
        "counter",
        "Events dropped: the recording queue was full, or ingest refused or failed to store them.",
        [(replica, metrics.dropped_events)],
    )
    lines += _series(
        "m1_events_dropped_by_reason_total",
        "counter",
        "Events dropped, by reason: queue_full, invalid:<metric>.<field>, store_error, "
        "batch_handler.",
        [({**replica, "reason": reason}, n) for reason, n in sorted(metrics.drops.items())],
    )
    queries = dict(metrics.query_counts)
    lines += _series(
        "m1_queries_running",
        "gauge",
        "Dashboard queries computing now (at most M1_QUERY_MAX_CONCURRENT).",
        [(replica, queries.pop("running"))],
    )
    lines += _series(
        "m1_queries_total",
        "counter",
        "Queries by outcome: completed, refused_input (a 4xx, guards included), refused_busy "
        "(503: the replica was at its limit), cancelled (the client went away).",
        [({**replica, "outcome": outcome}, n) for outcome, n in sorted(queries.items())],
    )
    lines += _series(
        "m1_events_queued",
        "gauge",
        "Events waiting to be stored.",
        [(replica, metrics.recorder.queued)],
    )
    lines += _series(
        "m1_event_store_lag_seconds",
        "gauge",
        "Age of the oldest event not yet in the store.",
        [(replica, metrics.store_lag_s)],
    )
    lines += _series(
        "m1_event_store_points",
        "gauge",
        "Points held per metric and resolution.",
        [({**replica, "metric": t.metric, "resolution": t.resolution}, t.points) for t in tiers],
    )
    lines += _series(
        "m1_event_store_bytes",
        "gauge",
        "Bytes held per metric and resolution.",
        [({**replica, "metric": t.metric, "resolution": t.resolution}, t.bytes) for t in tiers],
    )
    lines += _series(
        "m1_revocation_ready",
        "gauge",
        "1 when the revocation state is loaded and fresh.",
        [(replica, float(revocation.ready))],
    )
    lines += _series(
        "m1_revocation_sync_age_seconds",
        "gauge",
        "Seconds since the last successful revocation resync (-1 before the first).",
        [(replica, -1.0 if revocation.sync_age_s is None else revocation.sync_age_s)],
    )
    lines += _series(
        "m1_revoked_jtis",
        "gauge",
        "Revoked jtis held in memory.",
        [(replica, revocation.revoked_jtis)],
    )
    lines += _series(
        "m1_revocation_rules",
        "gauge",
        "Not-before rules held in memory.",
        [(replica, revocation.rules)],
    )
    lines += _series(
        "m1_cache_backend",
        "gauge",
        "1 for the cache backend in use.",
        [({**replica, "backend": b}, float(cache.backend == b)) for b in ("redis", "memory")],
    )
    lines += _series("m1_cache_hits_total", "counter", "Cache hits.", [(replica, cache.hits)])
    lines += _series("m1_cache_misses_total", "counter", "Cache misses.", [(replica, cache.misses)])
    lines += _series(
        "m1_ratelimit_backend_redis",
        "gauge",
        "1 when rate limits are shared through Redis, 0 when counted in memory.",
        [(replica, float(runtime.limiter.backend == "redis"))],
    )
    lines += _series(
        "m1_process_resident_memory_bytes",
        "gauge",
        "Resident memory of this process.",
        [(replica, psutil.Process(os.getpid()).memory_info().rss)],
    )
    return "\n".join(lines) + "\n"


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
def metrics(request: Request) -> PlainTextResponse:
    return PlainTextResponse(render(runtime_of(request)), media_type=CONTENT_TYPE)
