from __future__ import annotations

from collections.abc import Callable

from fastapi.testclient import TestClient

PREFLIGHT = {
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization,content-type",
}


def test_preflight_from_a_configured_origin_is_allowed(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client(cors={"origins": "https://dash.example"})
    response = client.options(
        "/api/m1/control/commands", headers={"Origin": "https://dash.example", **PREFLIGHT}
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "https://dash.example"
    assert response.headers["access-control-allow-credentials"] == "true"


def test_preflight_from_another_origin_is_refused(make_client: Callable[..., TestClient]) -> None:
    client = make_client(cors={"origins": "https://dash.example"})
    response = client.options(
        "/api/m1/control/commands", headers={"Origin": "https://evil.example", **PREFLIGHT}
    )
    assert response.status_code == 400
    assert "access-control-allow-origin" not in response.headers


def test_no_cors_headers_without_configured_origins(make_client: Callable[..., TestClient]) -> None:
    response = make_client().get("/health/live", headers={"Origin": "https://dash.example"})
    assert "access-control-allow-origin" not in response.headers
