from __future__ import annotations

from typing import Any

import httpx
import pytest

from m1lib.errors import DatabaseUnavailable, InputError
from tasks.retry import is_transient


class _State:
    def __init__(self, error: BaseException) -> None:
        self.error = error

    def result(self) -> Any:
        raise self.error


def _status_error(code: int) -> httpx.HTTPStatusError:
    request = httpx.Request("GET", "http://m1/x")
    return httpx.HTTPStatusError(
        "x", request=request, response=httpx.Response(code, request=request)
    )


@pytest.mark.parametrize(
    "error",
    [
        DatabaseUnavailable("down"),
        _status_error(503),
        httpx.ConnectError("refused"),
        TimeoutError(),
    ],
)
def test_dependency_failures_are_retried(error: BaseException) -> None:
    assert is_transient(None, None, _State(error))


@pytest.mark.parametrize(
    "error", [InputError("x", "bad"), _status_error(400), _status_error(404), ValueError("bad")]
)
def test_bad_input_is_not_retried(error: BaseException) -> None:
    assert not is_transient(None, None, _State(error))
