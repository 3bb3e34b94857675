"""GET /dashboard: the session login, the page's security headers, its static files, and the
session cookie on the dashboard's query (with its CSRF rule)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

from m1lib import auth
from m1lib.api.routes.page import CSP, PAGE_DIR, STATIC_DIR
from tests.m1lib.api.conftest import Keys

QUERY = "/api/m1/dashboard/query"
BODY = {"metric": "tool_executions", "timeRange": "1h"}
PAGE = {"Host": "testserver"}


def _login(client: TestClient, key: str) -> None:
    response = client.post("/api/m1/session", json={"key": key})
    assert response.status_code == 200, response.text


def test_without_a_session_the_page_redirects_to_the_key_form(
    keyed_client: tuple[TestClient, Keys],
) -> None:
    client, _ = keyed_client
    response = client.get("/dashboard", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/dashboard/login"
    form = client.get("/dashboard/login")
    assert form.status_code == 200
    assert form.headers["content-type"].startswith("text/html")
    assert 'id="login"' in form.text
    assert form.headers["content-security-policy"] == CSP


def test_a_bad_cookie_or_an_agent_session_is_sent_to_the_key_form(
    keyed_client: tuple[TestClient, Keys],
) -> None:
    client, _ = keyed_client
    client.cookies.set("m1_session", "forged.cookie")
    assert client.get("/dashboard", follow_redirects=False).status_code == 303
    db = client.app.state.runtime.db  # type: ignore[attr-defined]
    _login(client, auth.create_credential(db, "flow-agent", "agent", created_by="test"))
    assert client.get("/dashboard", follow_redirects=False).status_code == 303


def test_with_a_session_the_page_has_a_strict_csp_and_no_inline_script(
    keyed_client: tuple[TestClient, Keys],
) -> None:
    client, keys = keyed_client
    _login(client, keys.viewer)
    response = client.get("/dashboard", follow_redirects=False)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    csp = response.headers["content-security-policy"]
    assert "default-src 'self'" in csp
    assert "script-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert "unsafe-eval" not in csp
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"] == "no-store"
    assert 'id="conn"' in response.text
    for script in response.text.split("<script")[1:]:
        assert 'src="/dashboard/assets/' in script.split(">")[0], script  # no inline script
    assert "http://" not in response.text
    assert "https://" not in response.text
    assert client.head("/dashboard").status_code == 200


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("dashboard/dashboard.js", "javascript"),
        ("dashboard/login.js", "javascript"),
        ("dashboard/dashboard.css", "text/css"),
        ("vendor/uplot/uPlot.iife.min.js", "javascript"),
        ("vendor/uplot/uPlot.min.css", "text/css"),
    ],
)
def test_static_files_are_served_with_their_content_type(
    make_client: Callable[..., TestClient], path: str, content_type: str
) -> None:
    client = make_client(migrated=False)  # public files: no credential, no database needed
    response = client.get(f"/dashboard/assets/{path}")
    assert response.status_code == 200
    assert content_type in response.headers["content-type"]
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.content == (STATIC_DIR / path).read_bytes()


@pytest.mark.parametrize(
    "path",
    [
        "dashboard/missing.js",
        "nothing/here.css",
        "dashboard/",
        "../routes/page.py",
        "%2e%2e/routes/page.py",
        "dashboard/..%2f..%2fapp.py",
    ],
)
def test_a_missing_static_path_is_a_404_not_a_500(
    make_client: Callable[..., TestClient], path: str
) -> None:
    client = make_client(migrated=False)
    response = client.get(f"/dashboard/assets/{path}")
    assert response.status_code == 404, response.text
    assert response.headers["content-type"].startswith("application/problem+json")


def test_the_page_references_only_files_that_exist() -> None:
    for name in ("index.html", "login.html"):
        html = (PAGE_DIR / name).read_text()
        for part in html.split('"/dashboard/assets/')[1:]:
            assert (STATIC_DIR / part.split('"')[0]).is_file(), part.split('"')[0]


# -- the session cookie on POST /api/m1/dashboard/query --------------------------------------


def test_the_query_takes_the_session_cookie_with_the_dashboard_header(
    keyed_client: tuple[TestClient, Keys],
) -> None:
    client, keys = keyed_client
    _login(client, keys.viewer)
    response = client.post(QUERY, json=BODY, headers={"X-M1-Dashboard": "1"})
    assert response.status_code == 200, response.text
    same_origin = {"X-M1-Dashboard": "1", "Origin": "http://testserver"}
    assert client.post(QUERY, json=BODY, headers=same_origin).status_code == 200


def test_the_cookie_without_the_header_is_refused_saying_why(
    keyed_client: tuple[TestClient, Keys],
) -> None:
    client, keys = keyed_client
    _login(client, keys.viewer)
    response = client.post(QUERY, json=BODY)
    assert response.status_code == 401
    assert "X-M1-Dashboard: 1" in response.json()["detail"]
    assert client.post(QUERY, json=BODY, headers={"X-M1-Dashboard": "yes"}).status_code == 401


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example"},
        {"Origin": "http://testserver.evil.example"},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
    ],
)
def test_the_cookie_from_another_site_is_refused(
    keyed_client: tuple[TestClient, Keys], headers: dict[str, str]
) -> None:
    client, keys = keyed_client
    _login(client, keys.viewer)
    response = client.post(QUERY, json=BODY, headers={"X-M1-Dashboard": "1", **headers})
    assert response.status_code == 403
    assert "cross-site" in response.json()["detail"]


def test_other_posts_still_refuse_the_cookie_even_with_the_header(
    keyed_client: tuple[TestClient, Keys],
) -> None:
    client, keys = keyed_client
    _login(client, keys.admin)
    response = client.post(
        "/api/m1/control/commands", json={"name": "cache.evict"}, headers={"X-M1-Dashboard": "1"}
    )
    assert response.status_code == 401
    assert "GET only" in response.json()["detail"]


def test_a_key_needs_no_dashboard_header(keyed_client: tuple[TestClient, Keys]) -> None:
    client, keys = keyed_client
    headers = {"Authorization": f"Bearer {keys.viewer}", "Origin": "https://other.example"}
    assert client.post(QUERY, json=BODY, headers=headers).status_code == 200
