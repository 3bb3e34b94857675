"""/metrics: prometheus_client's exposition of each replica's figures, read back with its own parser."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from m1lib.api.http_metrics import LATENCY_BUCKETS_S
from m1lib.api.routes.prometheus import set_stream_clients
from m1lib.errors import InputError
from tests.m1lib.api.conftest import Keys, bearer

# What /metrics served before prometheus_client (the hand-written text of m1lib/api/routes/
# prometheus.py up to issue 9): name -> (TYPE, HELP, label names). Dashboards know these.
LEGACY: dict[str, tuple[str, str, frozenset[str]]] = {
    "m1_events_dropped_total": (
        "counter",
        "Events dropped: the recording queue was full, or ingest refused or failed to store them.",
        frozenset({"replica"}),
    ),
    "m1_events_dropped_by_reason_total": (
        "counter",
        "Events dropped, by reason: queue_full, invalid:<metric>.<field>, store_error, "
        "batch_handler.",
        frozenset({"replica", "reason"}),
    ),
    "m1_queries_running": (
        "gauge",
        "Dashboard queries computing now (at most M1_QUERY_MAX_CONCURRENT).",
        frozenset({"replica"}),
    ),
    "m1_queries_total": (
        "counter",
        "Queries by outcome: completed, refused_input (a 4xx, guards included), refused_busy "
        "(503: the replica was at its limit), cancelled (the client went away).",
        frozenset({"replica", "outcome"}),
    ),
    "m1_events_queued": ("gauge", "Events waiting to be stored.", frozenset({"replica"})),
    "m1_event_store_lag_seconds": (
        "gauge",
        "Age of the oldest event not yet in the store.",
        frozenset({"replica"}),
    ),
    "m1_event_store_points": (
        "gauge",
        "Points held per metric and resolution.",
        frozenset({"replica", "metric", "resolution"}),
    ),
    "m1_event_store_bytes": (
        "gauge",
        "Bytes held per metric and resolution.",
        frozenset({"replica", "metric", "resolution"}),
    ),
    "m1_revocation_ready": (
        "gauge",
        "1 when the revocation state is loaded and fresh.",
        frozenset({"replica"}),
    ),
    "m1_revocation_sync_age_seconds": (
        "gauge",
        "Seconds since the last successful revocation resync (-1 before the first).",
        frozenset({"replica"}),
    ),
    "m1_revoked_jtis": ("gauge", "Revoked jtis held in memory.", frozenset({"replica"})),
    "m1_revocation_rules": ("gauge", "Not-before rules held in memory.", frozenset({"replica"})),
    "m1_cache_backend": (
        "gauge",
        "1 for the cache backend in use.",
        frozenset({"replica", "backend"}),
    ),
    "m1_cache_hits_total": ("counter", "Cache hits.", frozenset({"replica"})),
    "m1_cache_misses_total": ("counter", "Cache misses.", frozenset({"replica"})),
    "m1_ratelimit_backend_redis": (
        "gauge",
        "1 when rate limits are shared through Redis, 0 when counted in memory.",
        frozenset({"replica"}),
    ),
    "m1_process_resident_memory_bytes": (
        "gauge",
        "Resident memory of this process.",
        frozenset({"replica"}),
    ),
}
REQUESTS = "m1_http_requests_total"
LATENCY = "m1_http_request_duration_seconds"
ADDED = {
    REQUESTS,
    LATENCY,
    "m1_events_published_total",
    "m1_events_unpublished_total",
    "m1_events_unpersisted_total",
    "m1_stream_clients",
}


def _scrape(client: TestClient, keys: Keys | None = None) -> str:
    response = client.get("/metrics", headers=bearer(keys.viewer) if keys else None)
    assert response.status_code == 200, response.text
    return response.text


def _samples(text: str) -> list[Sample]:
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def _value(text: str, name: str, **labels: str) -> float:
    """The value of the one sample ``name`` whose labels include ``labels``; 0 when absent
    (a counter not yet counted)."""
    found = [
        s.value for s in _samples(text) if s.name == name and labels.items() <= s.labels.items()
    ]
    assert len(found) <= 1, (name, labels, found)
    return found[0] if found else 0.0


def test_metrics_need_a_viewer_by_default(keyed_client: tuple[TestClient, Keys]) -> None:
    client, keys = keyed_client
    assert client.get("/metrics").status_code == 401
    response = client.get("/metrics", headers=bearer(keys.viewer))
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"


def test_head_answers_like_get_without_a_body(keyed_client: tuple[TestClient, Keys]) -> None:
    client, keys = keyed_client
    head = client.head("/metrics", headers=bearer(keys.viewer))
    assert (head.status_code, head.content) == (200, b"")
    assert head.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert client.head("/metrics").status_code == 401


def test_public_metrics_need_no_credential(make_client: Callable[..., TestClient]) -> None:
    client = make_client(metrics={"public": True})
    response = client.get("/metrics")
    assert response.status_code == 200
    assert _value(response.text, "m1_revocation_ready") == 1


def test_every_series_carries_the_replica_label(keyed_client: tuple[TestClient, Keys]) -> None:
    client, keys = keyed_client
    client.get("/health/live")  # so the request series have samples too
    replica = client.app.state.runtime.settings.replica_id  # type: ignore[attr-defined]
    samples = _samples(_scrape(client, keys))
    assert {REQUESTS, f"{LATENCY}_count", "m1_stream_clients"} <= {s.name for s in samples}
    for sample in samples:
        assert sample.labels.get("replica") == replica, sample


def test_every_series_has_help_and_type(keyed_client: tuple[TestClient, Keys]) -> None:
    client, keys = keyed_client
    client.get("/health/live")
    text = _scrape(client, keys)
    helped = {line.split()[2] for line in text.splitlines() if line.startswith("# HELP ")}
    typed = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}
    assert helped == typed
    assert helped == set(LEGACY) | ADDED
    for line in text.splitlines():
        if not line.startswith("#"):
            name = line.split("{")[0]
            assert name in typed or name.rsplit("_", 1)[0] in typed, line  # _bucket, _sum, _count
    for family in text_string_to_metric_families(text):
        assert family.documentation, family.name
        assert family.type in {"counter", "gauge", "histogram"}, family.name


def test_every_series_served_before_keeps_its_name_type_help_and_labels(
    keyed_client: tuple[TestClient, Keys],
) -> None:
    client, keys = keyed_client
    metrics = client.app.state.runtime.metrics  # type: ignore[attr-defined]
    metrics.recorder.queue_size = 1  # the ingest thread is not running: the second is dropped
    for n in range(2):
        metrics.recorder.record_trusted("policy_decisions", ("t", "read", True, "ok", f"s{n}", 0.1))
    assert metrics.recorder.ingest_pending() == 1  # so the store holds points
    text = _scrape(client, keys)
    lines = set(text.splitlines())
    labels: dict[str, set[frozenset[str]]] = {}
    for sample in _samples(text):
        labels.setdefault(sample.name, set()).add(frozenset(sample.labels))
    for name, (kind, help_text, names) in LEGACY.items():
        assert f"# HELP {name} {help_text}" in lines, name
        assert f"# TYPE {name} {kind}" in lines, name
        assert labels.get(name) == {names}, name


def test_a_counter_past_a_million_reads_back_exactly(
    keyed_client: tuple[TestClient, Keys],
) -> None:
    client, keys = keyed_client
    metrics = client.app.state.runtime.metrics  # type: ignore[attr-defined]
    metrics.query_counts["completed"] = 1_234_567
    metrics.query_counts["cancelled"] = 123_456_789_012
    text = _scrape(client, keys)  # the hand-written text printed %g: 1.23457e+06
    assert _value(text, "m1_queries_total", outcome="completed") == 1_234_567
    assert _value(text, "m1_queries_total", outcome="cancelled") == 123_456_789_012


def test_dropped_events_are_counted(keyed_client: tuple[TestClient, Keys]) -> None:
    client, keys = keyed_client
    recorder = client.app.state.runtime.metrics.recorder  # type: ignore[attr-defined]
    recorder.queue_size = 2  # the ingest thread is not running in this test: the queue fills
    for n in range(5):
        recorder.record_trusted("policy_decisions", ("t", "read", True, "ok", f"s{n}", 0.1))
    assert _value(_scrape(client, keys), "m1_events_dropped_total") == 3


def test_dropped_events_are_counted_by_reason(keyed_client: tuple[TestClient, Keys]) -> None:
    client, keys = keyed_client
    recorder = client.app.state.runtime.metrics.recorder  # type: ignore[attr-defined]
    recorder.record_trusted("policy_decisions", ("t", "read", True, "ok", "s", float("inf")))
    recorder.queue_size = recorder.queued  # the queue is full: the next one is dropped
    recorder.record_trusted("policy_decisions", ("t", "read", True, "ok", "s", 0.1))
    assert recorder.flush(10)
    text = _scrape(client, keys)
    by_reason = {
        s.labels["reason"]: s.value
        for s in _samples(text)
        if s.name == "m1_events_dropped_by_reason_total"
    }
    assert by_reason == {"invalid:policy_decisions.checkMs": 1, "queue_full": 1}
    assert _value(text, "m1_events_dropped_total") == 2


def test_queries_are_counted_by_outcome(keyed_client: tuple[TestClient, Keys]) -> None:
    client, keys = keyed_client
    metrics = client.app.state.runtime.metrics  # type: ignore[attr-defined]
    metrics.run_query({"metric": "policy_decisions"})
    with pytest.raises(InputError):
        metrics.run_query({"metric": "policy_decisions", "groupBy": ["checkMs"]})
    text = _scrape(client, keys)
    outcomes = {
        s.labels["outcome"]: s.value for s in _samples(text) if s.name == "m1_queries_total"
    }
    assert outcomes == {"completed": 1, "refused_input": 1, "refused_busy": 0, "cancelled": 0}
    assert _value(text, "m1_queries_running") == 0


def test_requests_are_counted_and_timed_per_route_template(
    keyed_client: tuple[TestClient, Keys],
) -> None:
    client, keys = keyed_client
    status_route = "/api/m1/tokens/{jti}/status"
    before = _scrape(client, keys)
    for _ in range(2):
        assert client.get("/health/live").status_code == 200
    status = client.get("/api/m1/tokens/some-jti/status", headers=bearer(keys.viewer))
    status_class = f"{status.status_code // 100}xx"
    after = _scrape(client, keys)

    def moved(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    live = {"route": "/health/live", "method": "GET"}
    assert moved(REQUESTS, **live, status_class="2xx") == 2
    assert moved(REQUESTS, route=status_route, method="GET", status_class=status_class) == 1
    assert moved(f"{LATENCY}_count", **live) == 2
    assert moved(f"{LATENCY}_count", route=status_route, method="GET") == 1
    assert moved(f"{LATENCY}_sum", **live) > 0
    assert moved(REQUESTS, route="/metrics", method="GET", status_class="2xx") == 1
    assert "some-jti" not in after  # the template, never the raw path
    buckets = [
        s
        for s in _samples(after)
        if s.name == f"{LATENCY}_bucket" and live.items() <= s.labels.items()
    ]
    bounds = [s.labels["le"] for s in buckets]
    assert bounds == [*(str(b) for b in LATENCY_BUCKETS_S), "+Inf"]
    assert (bounds[0], bounds[-2]) == ("0.001", "10.0")
    counts = [s.value for s in buckets]
    assert counts == sorted(counts)  # cumulative
    assert counts[-1] == _value(after, f"{LATENCY}_count", **live) == 2


def test_unmatched_paths_and_odd_methods_share_one_label(
    keyed_client: tuple[TestClient, Keys],
) -> None:
    client, keys = keyed_client
    for path in ("/nope/1", "/nope/2", "/api/m1/nothing-here?x=1"):
        assert client.get(path).status_code == 404
    assert client.request("BREW", "/health/live").status_code == 405
    assert client.head("/health/live").status_code == 200
    text = _scrape(client, keys)
    assert _value(text, REQUESTS, route="unmatched", method="GET", status_class="4xx") == 3
    assert _value(text, REQUESTS, route="/health/live", method="other", status_class="4xx") == 1
    assert _value(text, REQUESTS, route="/health/live", method="HEAD", status_class="2xx") == 1
    for raw in ("nope", "nothing-here", "BREW"):
        assert raw not in text
    routes = {s.labels["route"] for s in _samples(text) if s.name == REQUESTS}
    assert routes == {"unmatched", "/health/live"}  # a scrape counts once it has answered


def test_two_apps_in_one_process_count_apart(make_client: Callable[..., TestClient]) -> None:
    first = make_client(metrics={"public": True}, replica={"id": "one"})
    second = make_client(metrics={"public": True}, replica={"id": "two"})
    for _ in range(3):
        first.get("/health/live")
    second.get("/health/live")
    one, two = _scrape(first), _scrape(second)
    live = {"route": "/health/live", "method": "GET", "status_class": "2xx"}
    assert _value(one, REQUESTS, replica="one", **live) == 3
    assert _value(two, REQUESTS, replica="two", **live) == 1
    assert "two" not in {s.labels["replica"] for s in _samples(one)}
    assert b"m1_" not in generate_latest(REGISTRY)  # nothing in the process-wide registry


def test_label_values_are_escaped(make_client: Callable[..., TestClient]) -> None:
    odd = 'a "quoted" \\ back\nslash'
    client = make_client(metrics={"public": True}, replica={"id": odd})
    text = _scrape(client)
    assert 'replica="a \\"quoted\\" \\\\ back\\nslash"' in text
    samples = _samples(text)
    assert len(samples) > len(LEGACY)
    assert {s.labels["replica"] for s in samples} == {odd}


def test_stream_clients_read_zero_until_the_stream_registers_a_count(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client(metrics={"public": True})
    assert _value(_scrape(client), "m1_stream_clients") == 0
    set_stream_clients(client.app, lambda: 7)  # type: ignore[arg-type]
    assert _value(_scrape(client), "m1_stream_clients") == 7
    set_stream_clients(client.app, None)  # type: ignore[arg-type]
    assert _value(_scrape(client), "m1_stream_clients") == 0


def test_events_shared_and_given_up_are_counted_without_redis(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client(metrics={"public": True})
    metrics = client.app.state.runtime.metrics  # type: ignore[attr-defined]
    metrics.unpersisted_events = 1_000_001
    text = _scrape(client)
    assert _value(text, "m1_events_published_total") == 0
    assert _value(text, "m1_events_unpublished_total") == 0
    assert _value(text, "m1_events_unpersisted_total") == 1_000_001


def test_events_put_on_the_shared_stream_are_counted(
    make_client: Callable[..., TestClient], shared_redis_url: str, redis_prefix: str
) -> None:
    client = make_client(
        metrics={"public": True}, redis={"url": shared_redis_url, "prefix": redis_prefix}
    )
    metrics = client.app.state.runtime.metrics  # type: ignore[attr-defined]
    for n in range(5):
        metrics.recorder.record_trusted("policy_decisions", ("t", "read", True, "ok", f"s{n}", 0.1))
    metrics.recorder.ingest_pending()  # the runtime is not started: ingest and send by hand
    assert metrics.publisher.send_pending()
    text = _scrape(client)
    assert _value(text, "m1_events_published_total") == 5
    assert _value(text, "m1_events_unpublished_total") == 0
