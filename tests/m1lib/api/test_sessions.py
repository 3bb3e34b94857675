"""Browser sessions: cookie flags, GET-only acceptance, logout, death with the credential."""

from __future__ import annotations

from collections.abc import Callable
from http.cookies import SimpleCookie

from fastapi.testclient import TestClient

from m1lib import auth
from m1lib.api.sessions import COOKIE_NAME, SessionClaims, decode_session, encode_session
from tests.m1lib.api.conftest import Keys


def _login(client: TestClient, key: str) -> SimpleCookie:
    response = client.post("/api/m1/session", json={"key": key})
    assert response.status_code == 200, response.text
    cookie: SimpleCookie = SimpleCookie()
    cookie.load(response.headers["set-cookie"])
    return cookie


def test_login_sets_httponly_samesite_strict_cookie_with_expiry(
    keyed_client: tuple[TestClient, Keys],
) -> None:
    client, keys = keyed_client
    morsel = _login(client, keys.viewer)[COOKIE_NAME]
    assert morsel["httponly"]
    assert morsel["samesite"].lower() == "strict"
    assert int(morsel["max-age"]) == 8 * 3600
    assert morsel["path"] == "/"
    assert not morsel["secure"]  # no TLS configured in this app
    assert keys.viewer not in morsel.value


def test_cookie_is_secure_when_tls_is_configured(
    make_client: Callable[..., TestClient], tmp_path
) -> None:
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    client = make_client(jwt={"secret": "s" * 40}, tls={"cert_file": cert, "key_file": key})
    db = client.app.state.runtime.db  # type: ignore[attr-defined]
    api_key = auth.create_credential(db, "browser", "viewer", created_by="test")
    assert _login(client, api_key)[COOKIE_NAME]["secure"]


def test_cookie_authenticates_get_routes(keyed_client: tuple[TestClient, Keys]) -> None:
    client, keys = keyed_client
    _login(client, keys.viewer)
    assert client.get("/api/m1/replicas").status_code == 200


def test_cookie_is_not_accepted_on_post(keyed_client: tuple[TestClient, Keys]) -> None:
    client, keys = keyed_client
    _login(client, keys.admin)
    response = client.post("/api/m1/control/commands", json={"name": "cache.evict"})
    assert response.status_code == 401
    assert "GET only" in response.json()["detail"]


def test_logout_clears_the_cookie(keyed_client: tuple[TestClient, Keys]) -> None:
    client, keys = keyed_client
    _login(client, keys.viewer)
    assert client.delete("/api/m1/session").status_code == 204
    assert client.get("/api/m1/replicas").status_code == 401


def test_session_dies_with_its_credential(keyed_client: tuple[TestClient, Keys]) -> None:
    client, keys = keyed_client
    _login(client, keys.viewer)
    runtime = client.app.state.runtime  # type: ignore[attr-defined]
    auth.revoke_credential(runtime.db, "ops-viewer")
    runtime.credentials.refresh()
    assert client.get("/api/m1/replicas").status_code == 401


def test_login_with_a_wrong_key_is_401(keyed_client: tuple[TestClient, Keys]) -> None:
    client, _ = keyed_client
    response = client.post("/api/m1/session", json={"key": "m1_wrong"})
    assert response.status_code == 401
    assert "set-cookie" not in response.headers


def test_login_without_key_is_422_naming_the_field(keyed_client: tuple[TestClient, Keys]) -> None:
    client, _ = keyed_client
    response = client.post("/api/m1/session", json={})
    assert response.status_code == 422
    assert response.json()["errors"][0]["path"] == "/key"


def test_tampered_and_expired_cookies_are_refused() -> None:
    key = b"k" * 32
    cookie = encode_session(key, SessionClaims("ops", "abcd", 2_000_000_000))
    assert decode_session(key, cookie, now=1_000) is not None
    payload, signature = cookie.split(".")
    assert decode_session(key, payload[:-2] + "xx." + signature, now=1_000) is None
    assert decode_session(b"x" * 32, cookie, now=1_000) is None
    assert decode_session(key, cookie, now=2_000_000_001) is None
    assert decode_session(key, "garbage", now=1_000) is None
