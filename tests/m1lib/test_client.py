"""ApiClient against a real replica: problem+json back into M1's errors, Retry-After honoured."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from m1lib.client import ApiClient, error_from_response
from m1lib.errors import (
    AuthenticationError,
    InputError,
    M1Error,
    PermissionDeniedError,
    RateLimitedError,
    UnavailableError,
)


def _answer(status: int, body: object = None, **headers: str) -> httpx.Response:
    return httpx.Response(status, json=body, headers=headers)


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (401, {"detail": "no credential"}, AuthenticationError),
        (403, {"detail": "viewer may not"}, PermissionDeniedError),
        (429, {"detail": "slow down"}, RateLimitedError),
        (503, {"detail": "database down"}, UnavailableError),
        (413, {"detail": "too large"}, InputError),
        (500, {"detail": "boom", "reference": "abc"}, M1Error),
    ],
)
def test_status_maps_to_error_class(status: int, body: object, expected: type[M1Error]) -> None:
    error = error_from_response(_answer(status, body))
    assert type(error) is expected
    assert str(body["detail"]) in str(error)  # type: ignore[index]


def test_validation_problem_names_the_first_member_and_counts_the_rest() -> None:
    body = {
        "detail": "the request does not validate",
        "errors": [
            {"path": "/0/toolName", "problem": "unknown tool", "allowed": ["a", "b"]},
            {"path": "/3/success", "problem": "not a boolean"},
        ],
    }
    error = error_from_response(_answer(422, body))
    assert isinstance(error, InputError)
    assert error.path == "/0/toolName"
    assert error.allowed == ["a", "b"]
    assert "1 more" in error.problem


def test_a_body_that_is_not_json_still_gives_a_clear_error() -> None:
    error = error_from_response(httpx.Response(502, text="<html>bad gateway</html>"))
    assert "502" in str(error)


def _client(handler: Callable[[httpx.Request], httpx.Response], **kwargs: object) -> ApiClient:
    slept: list[float] = []
    client = ApiClient(
        "http://m1.invalid/",
        "m1_secretkey",
        transport=httpx.MockTransport(handler),
        sleep=slept.append,
        **kwargs,  # type: ignore[arg-type]
    )
    client.slept = slept  # type: ignore[attr-defined]
    return client


def test_retry_after_is_honoured_then_the_answer_returned() -> None:
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if len(calls) < 3:
            return _answer(429, {"detail": "slow down"}, **{"Retry-After": "2"})
        return _answer(202, {"accepted": 2, "dropped": 0})

    client = _client(handler)
    assert client.record_events([{"metric": "x"}, {"metric": "y"}]) == {"accepted": 2, "dropped": 0}
    assert client.slept == [2.0, 2.0]  # type: ignore[attr-defined]
    assert calls[0].headers["Authorization"] == "Bearer m1_secretkey"
    assert calls[0].url.path == "/api/m1/events"


def test_waiting_stops_at_max_wait_with_the_servers_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return _answer(503, {"detail": "database down"}, **{"Retry-After": "5"})

    client = _client(handler, max_wait_s=12)
    with pytest.raises(UnavailableError, match="database down") as caught:
        client.get_json("/api/m1/health")
    assert client.slept == [5.0, 5.0]  # type: ignore[attr-defined]
    assert caught.value.retry_after_s == 5


def test_unreachable_api_is_unavailable_without_the_key() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(UnavailableError) as caught, _client(handler) as client:
        client.query({"metric": "tool_executions"})
    assert "m1.invalid" in str(caught.value)
    assert "secretkey" not in str(caught.value)
