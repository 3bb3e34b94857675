from __future__ import annotations

from collections.abc import Callable

from fastapi import FastAPI
from fastapi.testclient import TestClient

from m1lib.api.problems import PROBLEM_JSON


def test_live_answers_without_touching_dependencies(make_client: Callable[..., TestClient]) -> None:
    client = make_client(migrated=False, database={"url": "postgresql://x@127.0.0.1:1/none"})
    response = client.get("/health/live")
    assert response.status_code == 200
    assert response.json() == {"status": "live"}


def test_ready_when_migrations_are_current(make_client: Callable[..., TestClient]) -> None:
    response = make_client().get("/health/ready")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ready"
    assert body["checks"]["database"]["ok"]
    assert body["checks"]["migrations"]["ok"]


def test_not_ready_when_the_schema_is_behind(make_client: Callable[..., TestClient]) -> None:
    response = make_client(migrated=False).get("/health/ready")
    assert response.status_code == 503
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    assert response.headers["retry-after"]
    body = response.json()
    assert body["status"] == 503
    assert "migrations" in body["detail"]
    assert body["checks"]["migrations"]["ok"] is False


def test_not_ready_503_when_the_database_is_unreachable(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client(
        migrated=False,
        database={"url": "postgresql://m1:sekrit-pw@127.0.0.1:1/m1", "connect_timeout_s": 1},
    )
    response = client.get("/health/ready")
    assert response.status_code == 503
    assert response.headers["retry-after"]
    body = response.json()
    assert body["checks"]["database"]["ok"] is False
    assert "sekrit-pw" not in response.text


def test_openapi_docs_are_served(make_client: Callable[..., TestClient]) -> None:
    client = make_client()
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/health/live", "/health/ready"} <= set(paths)


def test_unknown_route_is_problem_json(make_client: Callable[..., TestClient]) -> None:
    response = make_client().get("/no/such/route")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    assert response.json()["title"] == "Not found"


def test_unexpected_error_is_a_500_without_traceback(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client()
    app: FastAPI = client.app  # type: ignore[assignment]

    @app.get("/boom")
    def boom() -> None:
        raise ZeroDivisionError("secret internals")

    response = client.get("/boom")
    assert response.status_code == 500
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    assert "secret internals" not in response.text
    assert "Traceback" not in response.text
    assert "reference" in response.json()["detail"]


def test_docs_page_uses_local_assets_not_a_cdn(make_client: Callable[..., TestClient]) -> None:
    client = make_client()
    page = client.get("/docs").text
    assert "cdn" not in page.lower()
    assert client.get("/docs/assets/swagger-ui-bundle.js").status_code == 200
    assert client.get("/docs/assets/swagger-ui.css").status_code == 200
