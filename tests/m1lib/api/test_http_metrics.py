"""The request-counting middleware: route templates, bounded labels, buckets, failures."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient
from starlette.types import Message, Receive, Scope, Send

from m1lib.api.http_metrics import (
    LATENCY_BUCKETS_S,
    UNMATCHED,
    HttpMetrics,
    RequestMetricsMiddleware,
    RouteTemplates,
)


def _scope(path: str = "/x", method: str = "GET") -> Scope:
    return {"type": "http", "method": method, "path": path, "root_path": "", "headers": []}


async def _receive() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


def _run(app: Callable[[Scope, Receive, Send], object], scope: Scope, metrics: HttpMetrics) -> list[Message]:  # fmt: skip
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    async def main() -> None:
        await RequestMetricsMiddleware(app, metrics=metrics)(scope, _receive, send)  # type: ignore[arg-type]

    asyncio.run(main())
    return sent


def test_latency_buckets_are_inclusive_upper_bounds_and_cumulative() -> None:
    metrics = HttpMetrics()
    for seconds in (0.0005, 0.001, 0.0011, 10.0, 10.5):
        metrics.observe("/r", "GET", 200, seconds)
    cumulative, sum_s = metrics.snapshot().latency[("/r", "GET")]
    assert len(cumulative) == len(LATENCY_BUCKETS_S) + 1
    by_bound = dict(zip([*LATENCY_BUCKETS_S, float("inf")], cumulative, strict=True))
    assert by_bound[0.001] == 2  # 0.0005 and exactly 0.001: le is "less than or equal"
    assert by_bound[0.0025] == 3
    assert by_bound[5.0] == 3
    assert by_bound[10.0] == 4
    assert by_bound[float("inf")] == 5
    assert sum_s == pytest.approx(0.0005 + 0.001 + 0.0011 + 10.0 + 10.5)


def test_requests_are_counted_by_status_class() -> None:
    metrics = HttpMetrics()
    for status in (200, 204, 404, 503, None):
        metrics.observe("/r", "POST", status, 0.01)
    assert metrics.snapshot().requests == {
        ("/r", "POST", "2xx"): 2,
        ("/r", "POST", "4xx"): 1,
        ("/r", "POST", "5xx"): 2,
    }


def test_a_snapshot_is_a_copy() -> None:
    metrics = HttpMetrics()
    metrics.observe("/r", "GET", 200, 0.01)
    snapshot = metrics.snapshot()
    metrics.observe("/r", "GET", 200, 0.01)
    assert snapshot.requests == {("/r", "GET", "2xx"): 1}
    assert snapshot.latency[("/r", "GET")][0][-1] == 1


def test_an_app_that_fails_before_answering_counts_as_5xx_and_the_error_goes_on() -> None:
    metrics = HttpMetrics()

    async def broken(scope: Scope, receive: Receive, send: Send) -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        _run(broken, _scope(), metrics)
    assert metrics.snapshot().requests == {(UNMATCHED, "GET", "5xx"): 1}


def test_an_app_that_fails_after_answering_counts_its_status() -> None:
    metrics = HttpMetrics()

    async def half(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        raise RuntimeError("cut")

    with pytest.raises(RuntimeError):
        _run(half, _scope(method="PROPFIND"), metrics)
    assert metrics.snapshot().requests == {(UNMATCHED, "other", "2xx"): 1}


def test_other_scopes_pass_through_uncounted() -> None:
    metrics = HttpMetrics()
    seen: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope["type"])

    _run(app, {"type": "lifespan"}, metrics)
    _run(app, {"type": "websocket", "path": "/ws"}, metrics)
    assert seen == ["lifespan", "websocket"]
    assert metrics.snapshot().requests == {}


def test_the_middleware_refuses_a_wrong_counter_at_start_up() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        return None

    with pytest.raises(TypeError, match="metrics: expected HttpMetrics"):
        RequestMetricsMiddleware(app, metrics={})  # type: ignore[arg-type]


def test_a_mounted_app_counts_under_its_prefix(make_client: Callable[..., TestClient]) -> None:
    client = make_client()
    assert client.get("/docs/assets/swagger-ui.css").status_code == 200
    assert client.get("/docs/assets/missing.css").status_code == 404
    metrics: HttpMetrics = client.app.state.prometheus.http  # type: ignore[attr-defined]
    requests = metrics.snapshot().requests
    assert requests[("/docs/assets/{path}", "GET", "2xx")] == 1
    assert requests[("/docs/assets/{path}", "GET", "4xx")] == 1


def test_a_path_parameter_holding_slashes_counts_under_the_template(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client()
    client.get("/api/m1/tokens/a/b/c/status", headers={"Authorization": "Bearer x"})
    metrics: HttpMetrics = client.app.state.prometheus.http  # type: ignore[attr-defined]
    assert set(metrics.snapshot().requests) == {("/api/m1/tokens/{jti}/status", "GET", "4xx")}


def test_a_path_under_a_root_path_counts_under_its_template(
    make_client: Callable[..., TestClient],
) -> None:
    app = make_client().app
    templates = RouteTemplates()
    scope = {"type": "http", "method": "GET", "app": app, "root_path": "/m1"}
    assert templates.template({**scope, "path": "/m1/health/live"}) == "/health/live"
    assert templates.template({**scope, "path": "/m1x/health/live"}) == UNMATCHED
    assert templates.template({**scope, "path": "/m1/api/m1/tokens/j/status"}) == (
        "/api/m1/tokens/{jti}/status"
    )


def test_templates_stay_right_and_bounded_past_many_paths(
    make_client: Callable[..., TestClient],
) -> None:
    app = make_client().app
    templates = RouteTemplates()
    scope = {"type": "http", "method": "GET", "app": app, "root_path": ""}
    for n in range(3000):  # a scanner
        assert templates.template({**scope, "path": f"/scan/{n}"}) == UNMATCHED
        assert templates.template({**scope, "path": "/health/live"}) == "/health/live"
    assert len(templates._seen) <= 1024


def test_a_route_added_later_gets_its_template(make_client: Callable[..., TestClient]) -> None:
    client = make_client()
    assert client.get("/later/1").status_code == 404
    client.app.add_api_route("/later/{n}", lambda n: {"n": n})  # type: ignore[attr-defined]
    assert client.get("/later/2").status_code == 200
    metrics: HttpMetrics = client.app.state.prometheus.http  # type: ignore[attr-defined]
    requests = metrics.snapshot().requests
    assert requests[(UNMATCHED, "GET", "4xx")] == 1
    assert requests[("/later/{n}", "GET", "2xx")] == 1
