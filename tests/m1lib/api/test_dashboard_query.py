"""Dashboard routes: the seed query over HTTP, templates, schema; every user error is problem+json."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from m1lib.api.problems import PROBLEM_JSON, install_problem_handlers
from m1lib.api.routes import dashboard
from m1lib.metrics import MetricsRuntime
from m1lib.metrics.budget import QueryCancelled
from m1lib.settings import Settings
from tests.services import free_port
from tests.waiting import wait_for

QUERY = "/api/m1/dashboard/query"
SEED = {"metric": "policy_decisions", "timeRange": "24h", "groupBy": ["toolName", "scope"],
        "filters": [{"field": "allowed", "op": "eq", "value": False}],
        "aggregations": ["count", "percentiles"]}  # fmt: skip


@pytest.fixture
def client(make_settings: Callable[..., Settings]) -> Iterator[TestClient]:
    metrics = MetricsRuntime(make_settings(), replica_id="api-test")
    metrics.start()
    for i in range(40):
        metrics.record_event("policy_decisions", toolName="web_search" if i % 2 else "shell", scope="read",
                             allowed=i % 3 == 0, reason="ok" if i % 3 == 0 else "revoked",
                             subject=f"agent-{i % 4}", checkMs=0.1 * (i + 1))  # fmt: skip
    assert metrics.flush()
    app = FastAPI()
    install_problem_handlers(app)
    app.include_router(dashboard.router)
    app.state.runtime = SimpleNamespace(metrics=metrics)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client
    metrics.close()


def problem_errors(response: Any) -> list[dict[str, Any]]:
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    errors: list[dict[str, Any]] = response.json()["errors"]
    return errors


def test_the_seed_query_runs_unchanged(client: TestClient) -> None:
    response = client.post(QUERY, json=SEED)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"rows", "trend", "anomalies", "meta"}
    assert sum(row["count"] for row in body["rows"]) == 26
    assert set(body["rows"][0]) == {"toolName", "scope", "count", "p50", "p95", "p99"}
    meta = body["meta"]
    assert meta["source"] in ("raw", "rollup")
    assert meta["percentileErrorBound"] == 0.01
    assert {"executionMs", "rowsScanned", "droppedEvents"} <= set(meta)


def test_buckets_are_iso_8601_and_detection_is_json(client: TestClient) -> None:
    query = {"metric": "policy_decisions", "timeRange": "1h", "interval": "1m", "aggregations": ["count", "p99"],
             "detect": {"trend": {"field": "count"}, "anomaly": {"field": "p99", "method": "mad"}}}  # fmt: skip
    body = client.post(QUERY, json=query).json()
    assert body["rows"][0]["bucket"].endswith("Z")
    assert body["trend"]["direction"] in ("up", "down", "flat")


@pytest.mark.parametrize(
    ("body", "status", "path", "allowed_has"),
    [
        ({**SEED, "filters": [{"field": "allowed", "op": "like", "value": 1}]}, 422, "/filters/0/op", "startsWith"),
        ({**SEED, "metric": "policy"}, 422, "/metric", "policy_decisions"),
        ({**SEED, "aggregations": ["p42"]}, 422, "/aggregations/0/op", "p99"),
        ({**SEED, "filters": [{"or": [{"field": "scope", "op": "eq"}]}]}, 422, "/filters/0/or/0/value", None),
        ({**SEED, "timeRange": "yesterday"}, 422, "/timeRange", "24h"),
        ({**SEED, "filters": [{"field": "colour", "op": "eq", "value": 1}]}, 400, "/filters/0/field", "toolName"),
        ({**SEED, "timeRange": "7d", "groupBy": ["subject"]}, 400, "/groupBy/0", None),
        ({**SEED, "limit": 60_000}, 400, "/limit", None),
        ({**SEED, "timeRange": {"from": "0001-01-01T00:00:00+14:00", "to": "0001-01-02T00:00:00Z"}},
         422, "/timeRange/from", "1970-01-01T00:00:00Z..9999-12-31T23:59:59Z"),
        ({**SEED, "interval": "999999999d"}, 422, "/interval", "at most 36500d"),
        ({**SEED, "filters": [{"field": "checkMs", "op": "gt", "value": 10**400}]}, 422, "/filters/0/value", None),
    ],
)  # fmt: skip
def test_user_errors_name_the_path_problem_and_allowed(client: TestClient, body: dict[str, Any], status: int,
                                                       path: str, allowed_has: str | None) -> None:  # fmt: skip
    response = client.post(QUERY, json=body)
    assert response.status_code == status, response.text
    (error,) = problem_errors(response)[:1]
    assert error["path"] == path
    assert error["problem"]
    if allowed_has is not None:
        assert any(allowed_has in item for item in error["allowed"])


def test_the_raw_retention_rule_names_the_field_and_the_retention(client: TestClient) -> None:
    body = {
        **SEED,
        "timeRange": "3d",
        "filters": [{"field": "subject", "op": "eq", "value": "agent-1"}],
    }
    response = client.post(QUERY, json=body)
    assert response.status_code == 400
    (error,) = problem_errors(response)
    assert error["path"] == "/filters/0/field"
    assert "subject" in error["problem"]
    assert "1d (M1_RAW_RETENTION)" in error["problem"]


def test_a_body_that_is_not_json_is_a_422(client: TestClient) -> None:
    response = client.post(QUERY, content=b"{nope", headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert problem_errors(response)


def test_templates_and_schema(client: TestClient) -> None:
    templates = client.get("/api/m1/dashboard/templates").json()["templates"]
    assert "denied_decisions_by_tool" in {t["name"] for t in templates}
    for t in templates:
        assert client.post(QUERY, json=t["query"]).status_code == 200, t["name"]
    schema = client.get("/api/m1/dashboard/schema").json()
    assert "aggregations" in schema["properties"]


def test_without_a_metrics_runtime_the_route_is_unavailable() -> None:
    app = FastAPI()
    install_problem_handlers(app)
    app.include_router(dashboard.router)
    app.state.runtime = SimpleNamespace()
    with TestClient(app, raise_server_exceptions=False) as bare:
        response = bare.post(QUERY, json=SEED)
    assert response.status_code == 503
    assert "Retry-After" in response.headers


BODIES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=6)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(
        st.sampled_from(["metric", "field", "op", "value", "and", "or", "filters", "aggregations", "groupBy",
                         "timeRange", "interval", "x"]), inner, max_size=4)),
    max_leaves=12,
)  # fmt: skip


@settings(deadline=None, max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])  # fmt: skip
@given(
    st.one_of(
        BODIES,
        st.builds(
            lambda extra: {**SEED, **extra},
            st.dictionaries(
                st.sampled_from(
                    ["filters", "aggregations", "groupBy", "interval", "having", "orderBy"]
                ),
                BODIES,
                max_size=2,
            ),
        ),
    )
)
def test_no_query_body_of_any_shape_gets_a_500(client: TestClient, body: Any) -> None:  # fmt: skip
    response = client.post(QUERY, json=body)
    assert response.status_code in (200, 400, 422), response.text
    if response.status_code != 200:
        assert problem_errors(response)[0]["path"].startswith("/")


# -- a replica computes a few queries at once, and stops the ones nobody waits for any more ---------

HEAVY = {"metric": "policy_decisions", "timeRange": "24h", "interval": "1s", "groupBy": ["toolName", "reason"],
         "detect": {"anomaly": {"field": "count", "method": "mad", "window": 1000}}}  # fmt: skip


@pytest.fixture
def one_query_at_a_time(make_settings: Callable[..., Settings]) -> Iterator[MetricsRuntime]:
    """One query slot, no timeout to speak of, no cap on detection: HEAVY runs for minutes."""
    settings = make_settings(
        query={"max_concurrent": 1, "timeout_s": 3600, "max_detect_cells": 10**12}
    )
    metrics = MetricsRuntime(settings, replica_id="api-busy")
    metrics.start()
    now = time.time()
    metrics.record_events({"metric": "policy_decisions", "timestamp": now - i * 7.3, "toolName": f"tool{i % 5}",
                           "scope": "read", "allowed": False, "reason": f"r{i % 3}", "subject": "a",
                           "checkMs": 1.0} for i in range(5000))  # fmt: skip
    assert metrics.flush(60)
    yield metrics
    metrics.close()


def app_over(metrics: MetricsRuntime) -> FastAPI:
    app = FastAPI()
    install_problem_handlers(app)
    app.include_router(dashboard.router)
    app.state.runtime = SimpleNamespace(metrics=metrics)
    return app


def test_a_query_over_the_replica_limit_gets_503_with_retry_after(
    one_query_at_a_time: MetricsRuntime,
) -> None:
    metrics = one_query_at_a_time
    cancel = threading.Event()
    outcome: list[BaseException] = []

    def occupy() -> None:
        try:
            metrics.run_query(HEAVY, cancel=cancel)
        except QueryCancelled as error:
            outcome.append(error)

    worker = threading.Thread(target=occupy)
    worker.start()
    try:
        wait_for(lambda: metrics.query_counts["running"] == 1, "the heavy query to take the slot")
        with TestClient(app_over(metrics), raise_server_exceptions=False) as http:
            response = http.post(QUERY, json=SEED)
        assert response.status_code == 503, response.text
        assert response.headers["Retry-After"] == "1"
        assert response.headers["content-type"].startswith(PROBLEM_JSON)
        assert "M1_QUERY_MAX_CONCURRENT" in response.json()["detail"]
    finally:
        cancel.set()
        worker.join(120)
    assert len(outcome) == 1


def test_a_client_that_disconnects_stops_its_query(one_query_at_a_time: MetricsRuntime) -> None:
    metrics = one_query_at_a_time
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app_over(metrics), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, "uvicorn to start")
        body = json.dumps(HEAVY).encode()
        with socket.create_connection(("127.0.0.1", port), timeout=30) as client:
            client.sendall(b"POST " + QUERY.encode() + b" HTTP/1.1\r\nHost: test\r\n"
                           b"Content-Type: application/json\r\nContent-Length: "
                           + str(len(body)).encode() + b"\r\n\r\n" + body)  # fmt: skip
            wait_for(lambda: metrics.query_counts["running"] == 1, "the query to start computing")
        # the client is gone; the query would compute for minutes if nobody noticed
        wait_for(lambda: metrics.query_counts["cancelled"] == 1, "the abandoned query to stop",
                 timeout_s=120)  # fmt: skip
        assert metrics.query_counts["running"] == 0
        assert metrics.query_counts["completed"] == 0
    finally:
        server.should_exit = True
        thread.join(30)
