from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from m1lib.errors import DatabaseUnavailable, InputError
from tasks.retry import RETRIES, RETRY_DELAYS_S, io_task, is_transient


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


def test_io_task_applies_the_policy_and_keeps_the_function() -> None:
    @io_task("sample-io")
    def sample(value: int) -> int:
        """Doubles."""
        return value * 2

    assert sample.name == "sample-io"
    assert (sample.retries, sample.retry_condition_fn) == (RETRIES, is_transient)
    assert sample.retry_delay_seconds == RETRY_DELAYS_S == [2, 5, 10]
    assert sample.fn(4) == 8
    assert sample.fn.__doc__ == "Doubles."


def test_every_io_task_of_m1_uses_the_policy() -> None:
    from prefect import Task

    import tasks.database
    import tasks.metrics
    import tasks.tokens

    found = [
        value
        for module in (tasks.database, tasks.metrics, tasks.tokens)
        for value in vars(module).values()
        if isinstance(value, Task)
    ]
    pure = {"compute-purge-cutoff"}
    assert len(found) >= 9
    for each in found:
        expected = (0, None) if each.name in pure else (RETRIES, is_transient)
        assert (each.retries, each.retry_condition_fn) == expected, each.name


ATTEMPTS: list[str] = []


@io_task("fails-once")
def _fails_once(error_name: str) -> str:
    ATTEMPTS.append(error_name)
    if len(ATTEMPTS) == 1:
        raise {"outage": DatabaseUnavailable("down"), "input": InputError("x", "bad")}[error_name]
    return "done"


@pytest.mark.parametrize(("error_name", "attempts"), [("outage", 2), ("input", 1)])
def test_under_prefect_an_outage_is_retried_and_bad_input_is_not(
    run_flow: Callable[..., Any], error_name: str, attempts: int
) -> None:
    from prefect import flow

    quick = _fails_once.with_options(retry_delay_seconds=0)

    @flow(name="retry-policy")
    def once() -> dict[str, str]:
        return {"answer": quick(error_name)}

    ATTEMPTS.clear()
    if attempts == 1:
        with pytest.raises(InputError):
            run_flow(once)
    else:
        assert run_flow(once).result == {"answer": "done"}
    assert len(ATTEMPTS) == attempts
