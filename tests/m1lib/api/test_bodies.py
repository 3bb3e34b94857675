"""Every route with a body: bounded (413) and strict JSON whose 422 says where it breaks."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from m1lib.api.bodies import MAX_JSON_DEPTH
from m1lib.api.problems import PROBLEM_JSON
from tests.m1lib.api.conftest import Keys, bearer

JSON = {"Content-Type": "application/json"}
# (path, role, body limit): every route that reads a body.
BODY_ROUTES = [
    ("/api/m1/dashboard/query", "viewer", 1024 * 1024),
    ("/api/m1/tokens/introspect", "viewer", 64 * 1024),
    ("/api/m1/tokens/revoke", "admin", 64 * 1024),
    ("/api/m1/tokens/revoke-all", "admin", 64 * 1024),
    ("/api/m1/control/commands", "admin", 256 * 1024),
    ("/api/m1/session", "viewer", 64 * 1024),
    ("/api/m1/tokens", "admin", 64 * 1024),
    ("/api/m1/events", "admin", 4 * 1024 * 1024),  # M1_EVENTS_INGEST_MAX_BYTES' default
]


def _post(
    client: TestClient, keys: Keys, route: str, role: str, content: bytes, **headers: str
) -> dict:  # type: ignore[type-arg]
    response = client.post(
        route, content=content, headers={**JSON, **bearer(getattr(keys, role)), **headers}
    )
    assert response.headers["content-type"].startswith(PROBLEM_JSON), response.text
    return {"status": response.status_code, **response.json()}


@pytest.mark.parametrize(("route", "role", "_limit"), BODY_ROUTES)
@pytest.mark.parametrize(
    ("content", "where"),
    [
        (b'{"a": "caf\xe9"}', "not UTF-8: byte 0xe9 at byte 10 (line 1, column 11)"),
        ("{}".encode("utf-16"), "not UTF-8: byte 0xff at byte 0 (line 1, column 1)"),
        (b"[" * 1000 + b"]" * 1000, f"nested deeper than {MAX_JSON_DEPTH} levels at byte 32"),
        (b'{\n  "a": 1,\n  "b": }', "not JSON: Expecting value at byte 19 (line 3, column 8)"),
        (b'{"a": NaN}', "NaN is not JSON at byte 6 (line 1, column 7)"),
        (b'{"s": "-Infinity", "a": -Infinity}', "-Infinity is not JSON at byte 24"),
        (b'{"a": 1' + b"0" * 5000 + b"}", "an integer of 5001 digits is too long at byte 6"),
    ],
)
def test_a_body_that_is_not_json_is_a_422_saying_where(
    keyed_client: tuple[TestClient, Keys],
    route: str,
    role: str,
    _limit: int,
    content: bytes,
    where: str,
) -> None:
    client, keys = keyed_client
    body = _post(client, keys, route, role, content)
    assert body["status"] == 422
    assert body["errors"][0]["path"] == "/"
    assert where in body["errors"][0]["problem"]


@pytest.mark.parametrize(("route", "role", "_limit"), BODY_ROUTES)
def test_a_lone_surrogate_is_a_422_naming_its_json_pointer(
    keyed_client: tuple[TestClient, Keys], route: str, role: str, _limit: int
) -> None:
    client, keys = keyed_client
    content = b'{"key": "x", "name": "x", "filters": [{"value": "ok", "note": "a\\udc00"}]}'
    body = _post(client, keys, route, role, content)
    assert body["status"] == 422
    assert body["errors"] == [
        {
            "path": "/filters/0/note",
            "problem": "holds a lone surrogate (U+DC00) at position 1",
            "allowed": [
                f"UTF-8 JSON (RFC 8259) nested at most {MAX_JSON_DEPTH} levels",
                "numbers (no NaN or Infinity; integers of at most 4300 digits)",
                "no lone surrogate",
            ],
        }
    ]


@pytest.mark.parametrize(("route", "role", "limit"), BODY_ROUTES)
def test_a_body_over_the_routes_bound_is_a_413(
    keyed_client: tuple[TestClient, Keys], route: str, role: str, limit: int
) -> None:
    client, keys = keyed_client
    body = _post(client, keys, route, role, b'{"pad": "' + b"x" * limit + b'"}')
    assert body["status"] == 413
    assert f"at most {limit} bytes" in body["detail"]


def test_a_body_of_exactly_the_bound_is_read(keyed_client: tuple[TestClient, Keys]) -> None:
    client, keys = keyed_client
    filler = 64 * 1024 - len(b'{"jti": "j-1", "pad": ""}')
    content = b'{"jti": "j-1", "pad": "' + b"x" * filler + b'"}'
    response = client.post(
        "/api/m1/tokens/revoke", content=content, headers={**JSON, **bearer(keys.admin)}
    )
    assert response.status_code == 200, response.text


def test_escaped_surrogate_pairs_are_text_not_surrogates(
    keyed_client: tuple[TestClient, Keys],
) -> None:
    client, keys = keyed_client
    response = client.post(
        "/api/m1/tokens/revoke",
        content=b'{"jti": "j-2", "reason": "\\ud83d\\ude00"}',
        headers={**JSON, **bearer(keys.admin)},
    )
    assert response.status_code == 200, response.text
    assert response.json()["record"]["reason"] == "\U0001f600"


def test_a_chunked_body_is_cut_off_at_the_bound(keyed_client: tuple[TestClient, Keys]) -> None:
    client, keys = keyed_client
    chunks = iter([b'{"jti": "j-3", "pad": "', b"x" * (64 * 1024), b'"}'])  # no Content-Length
    response = client.post(
        "/api/m1/tokens/revoke", content=chunks, headers={**JSON, **bearer(keys.admin)}
    )
    assert response.status_code == 413
    assert "more than 65536" in response.json()["detail"]
