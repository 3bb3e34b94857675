"""One error format: every error class answers application/problem+json, by the one table."""

from __future__ import annotations

import logging
import re

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from m1lib.api.problems import ANSWERS, PROBLEM_JSON, answer_for, install_problem_handlers
from m1lib.errors import (
    AuthenticationError,
    BusyError,
    DatabaseRefused,
    DatabaseUnavailable,
    InputError,
    M1Error,
    PermissionDeniedError,
    RateLimitedError,
    SettingsError,
    TokenRejectedError,
    UnavailableError,
    UsageError,
)
from m1lib.metrics.budget import QueryCancelled
from m1lib.metrics.codec import CodecError
from m1lib.vocabulary import Reason
from tests.m1lib.api.conftest import Keys, bearer
from tests.m1lib.test_errors import all_m1_errors


def _is_problem(response, status: int) -> dict:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    body = response.json()
    assert body["status"] == status
    assert {"type", "title", "detail"} <= set(body)
    return body


def test_422_names_path_problem_and_allowed(keyed_client: tuple[TestClient, Keys]) -> None:
    client, keys = keyed_client
    response = client.post(
        "/api/m1/control/commands",
        json={"name": "cache.evict", "ttlS": 0},
        headers=bearer(keys.admin),
    )
    body = _is_problem(response, 422)
    assert body["errors"][0]["path"] == "/ttlS"
    assert "greater than or equal to 1" in body["errors"][0]["problem"]


def test_400_for_a_valid_body_the_server_cannot_answer(
    keyed_client: tuple[TestClient, Keys],
) -> None:
    client, keys = keyed_client
    response = client.post(
        "/api/m1/control/commands", json={"name": "reboot.world"}, headers=bearer(keys.admin)
    )
    body = _is_problem(response, 400)
    assert "cache.evict" in body["errors"][0]["allowed"]
    assert body["errors"] == [
        {
            "path": "/name",
            "problem": "'reboot.world' is not a command",
            "allowed": client.app.state.runtime.registry.names(),  # type: ignore[attr-defined]
        }
    ]


def test_401_403_404_are_problems(keyed_client: tuple[TestClient, Keys]) -> None:
    client, keys = keyed_client
    _is_problem(client.get("/api/m1/replicas"), 401)
    _is_problem(
        client.post(
            "/api/m1/control/commands", json={"name": "cache.evict"}, headers=bearer(keys.viewer)
        ),
        403,
    )
    _is_problem(client.get("/nowhere"), 404)


DOWN = "postgresql://m1owner:hunter22@127.0.0.1:1/m1proddb"
SERVER_DETAILS = ("m1owner", "hunter22", "127.0.0.1", "m1proddb", "postgresql", ":1")


def test_503_when_the_database_is_down_names_no_server(make_client) -> None:  # type: ignore[no-untyped-def]
    client = make_client(migrated=False, database={"url": DOWN, "connect_timeout_s": 1})
    response = client.get("/api/m1/replicas", headers=bearer("m1_anything"))
    body = _is_problem(response, 503)
    assert body["detail"].startswith("the database is unavailable")
    assert f"retry in {response.headers['retry-after']} s" in body["detail"]
    for detail in SERVER_DETAILS:
        assert detail not in response.text


def test_readiness_with_the_database_down_names_no_server(make_client) -> None:  # type: ignore[no-untyped-def]
    client = make_client(migrated=False, database={"url": DOWN, "connect_timeout_s": 1})
    response = client.get("/health/ready")  # public: no credential needed to read it
    body = _is_problem(response, 503)
    assert body["checks"]["database"]["ok"] is False
    for detail in SERVER_DETAILS:
        assert detail not in response.text


# -- the table: each error class and its answer -----------------------------------------------------


def _raising(error: Exception) -> TestClient:
    """An app of one route that raises ``error``, answered by the problem handlers."""
    app = FastAPI()
    install_problem_handlers(app)

    @app.get("/boom")
    def boom() -> None:
        raise error

    return TestClient(app, raise_server_exceptions=False)


class FreshlyAddedError(M1Error):
    """A class nobody has given the table an answer for yet."""


KNOWN: list[tuple[Exception, int, dict[str, str]]] = [
    (InputError("/name", "is not a command", ["a", "b"]), 400, {}),
    (TokenRejectedError(Reason.EXPIRED, "expired"), 400, {}),
    (DatabaseRefused("the database refused the values (DataError)"), 400, {}),
    (QueryCancelled("the caller went away"), 400, {}),
    (AuthenticationError("no key"), 401, {"www-authenticate": 'Bearer realm="m1"'}),
    (PermissionDeniedError("viewer"), 403, {}),
    (RateLimitedError("slow down", retry_after_s=7), 429, {"retry-after": "7"}),
    (UnavailableError("redis is down", retry_after_s=3), 503, {"retry-after": "3"}),
    (
        DatabaseUnavailable("the database is unavailable", retry_after_s=2),
        503,
        {"retry-after": "2"},
    ),
    (BusyError("two queries run already", retry_after_s=1), 503, {"retry-after": "1"}),
]


@pytest.mark.parametrize(
    ("error", "status", "headers"), KNOWN, ids=[type(e).__name__ for e, _, _ in KNOWN]
)
def test_each_known_error_class_answers_its_status_and_headers(
    error: Exception, status: int, headers: dict[str, str]
) -> None:
    response = _raising(error).get("/boom")
    body = _is_problem(response, status)
    assert body["detail"] == str(error)
    assert "reference" not in body
    for name, value in headers.items():
        assert response.headers[name] == value
    if isinstance(error, InputError):
        assert body["errors"] == [
            {"path": "/name", "problem": "is not a command", "allowed": ["a", "b"]}
        ]


SERVER_FAULTS = [
    UsageError("used before start (password=hunter22)"),
    SettingsError("M1_DATABASE_URL: postgresql://u:hunter22@db/m1"),
    CodecError("damaged metrics payload hunter22"),
    FreshlyAddedError("hunter22"),
    RuntimeError("unexpected: hunter22"),
    KeyError("hunter22"),
]


@pytest.mark.parametrize("error", SERVER_FAULTS, ids=[type(e).__name__ for e in SERVER_FAULTS])
def test_server_faults_are_a_500_with_a_reference_that_the_log_line_carries(
    error: Exception, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="m1.api"):
        response = _raising(error).get("/boom")
    body = _is_problem(response, 500)
    assert body["title"] == "Internal error"
    reference = body["reference"]
    assert re.fullmatch(r"[0-9a-f]{12}", reference)
    assert body["detail"] == f"internal error (reference {reference}); the server log has details"
    assert "hunter22" not in response.text
    assert "Traceback" not in response.text
    [record] = [r for r in caplog.records if r.name == "m1.api"]
    assert reference in record.getMessage()
    assert "GET /boom" in record.getMessage()
    assert record.exc_info is not None
    assert record.exc_info[1] is error  # the traceback goes to the log, and only there


def test_each_500_gets_its_own_reference() -> None:
    client = _raising(UsageError("out of order"))
    first, second = (client.get("/boom").json()["reference"] for _ in range(2))
    assert first != second


def test_the_table_names_every_m1_error_and_the_mro_finds_the_nearest() -> None:
    """A new M1Error subclass gets a deliberate answer here, not whatever its parent's is."""
    assert all_m1_errors() <= set(ANSWERS)
    assert answer_for(FreshlyAddedError) is answer_for(M1Error)
    assert answer_for(M1Error).status == 500
    assert answer_for(BusyError) is ANSWERS[BusyError]
    assert answer_for(UsageError).status == 500  # before RuntimeError, after M1Error in its MRO
    assert answer_for(KeyboardInterrupt).status == 500  # not even an Exception: still a 500
