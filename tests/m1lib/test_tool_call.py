"""m1lib.tool_call: verifies through the process's engine, raises ToolDenied with every reason,
times the block and records tool_executions (class name, never the message), sync and async."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import m1lib
from m1lib import process_engine
from m1lib.errors import InputError, ToolDenied, UsageError
from m1lib.metrics import MetricsRuntime
from m1lib.policy import PolicyEngine, Reason
from m1lib.settings import Settings
from m1lib.tokens import TOKEN_TYPE, JwtKey, TokenCodec
from m1lib.tool_calls import ToolCall
from tests.m1lib.test_attacks import KID, SECRET, SUBJECT, TOOL, Revocations, forge, make_claims


class Secret(Exception):
    """An exception whose message must never reach an event."""


@pytest.fixture
def revocations() -> Revocations:
    return Revocations()


@pytest.fixture
def engine(
    make_settings: Callable[..., Settings], revocations: Revocations, metrics: MetricsRuntime
) -> Iterator[PolicyEngine]:
    """This process's default policy engine for the test, recording into ``metrics``."""
    codec = TokenCodec(
        signing_key=JwtKey.hmac(SECRET, kid=KID), issuer="m1", audience="m1-tools", ttl_s=300,
        leeway_s=5,
    )  # fmt: skip
    built = PolicyEngine(
        settings=make_settings(),
        codec=codec,
        revocation=revocations,
        recorder=metrics.recorder.policy_decision_sink(),
    )
    previous = process_engine.install_engine(built)
    yield built
    process_engine.install_engine(previous)


def executions(metrics: MetricsRuntime, *group: str) -> list[dict[str, Any]]:
    assert metrics.flush()
    query = {"metric": "tool_executions", "timeRange": "1h", "groupBy": list(group),
             "aggregations": ["count", "max"]}  # fmt: skip
    return metrics.run_query(query).rows


def test_an_allowed_call_runs_the_block_and_records_its_success(
    engine: PolicyEngine, metrics: MetricsRuntime
) -> None:
    with m1lib.tool_call(TOOL, "write", token=forge(), subject=SUBJECT) as call:
        assert isinstance(call, ToolCall)
        assert call.decision is not None
        assert call.decision.allowed
        assert call.success is None  # not known inside the block
        time.sleep(0.01)
    assert (call.success, call.error) == (True, None)
    assert call.duration_ms is not None
    assert call.duration_ms >= 10.0
    rows = executions(metrics, "toolName", "scope", "success", "error")
    assert rows == [{"toolName": TOOL, "scope": "write", "success": True, "error": None,
                     "count": 1, "max": pytest.approx(call.duration_ms)}]  # fmt: skip
    assert forge()[:20] not in repr(call)


def test_the_recorded_scope_is_the_one_checked(
    engine: PolicyEngine, metrics: MetricsRuntime
) -> None:
    """Asked for read, a write tool is checked (and recorded) at write, as policy_decisions are."""
    with m1lib.tool_call(TOOL, "read", token=forge(), subject=SUBJECT):
        pass
    assert [row["scope"] for row in executions(metrics, "scope")] == ["write"]


_NOW = int(time.time())
DENIALS: dict[Reason, dict[str, Any]] = {
    Reason.UNKNOWN_TOOL: {"tool": "no_such_tool"},
    Reason.TOKEN_REQUIRED: {"token": None},
    Reason.MALFORMED: {"token": "not-a-token"},
    Reason.INVALID_SIGNATURE: {"token": lambda: forge(secret=b"b" * 40)},
    Reason.UNKNOWN_KEY: {
        "token": lambda: forge(header={"alg": "HS256", "kid": "other", "typ": TOKEN_TYPE})
    },
    Reason.EXPIRED: {
        "token": lambda: forge(make_claims(iat=_NOW - 600, nbf=_NOW - 600, exp=_NOW - 300))
    },
    Reason.NOT_YET_VALID: {
        "token": lambda: forge(make_claims(iat=_NOW + 600, nbf=_NOW + 600, exp=_NOW + 800))
    },
    Reason.WRONG_AUDIENCE: {"token": lambda: forge(make_claims(aud="elsewhere"))},
    Reason.WRONG_ISSUER: {"token": lambda: forge(make_claims(iss="someone"))},
    Reason.TOOL_MISMATCH: {"token": lambda: forge(make_claims(toolName="request_approval"))},
    Reason.SUBJECT_MISMATCH: {"subject": "agent-other"},
    Reason.INSUFFICIENT_SCOPE: {"scope": "execute"},
    Reason.REVOKED: {"revoke": True},
    Reason.REVOCATION_STATE_STALE: {"stale": True},
    Reason.WRONG_TYPE: {"token": lambda: forge(header={"alg": "HS256", "kid": KID, "typ": "JWT"})},
}


def test_the_denial_table_covers_every_reason() -> None:
    assert set(DENIALS) == set(Reason) - {Reason.OK}


@pytest.mark.parametrize("reason", list(DENIALS), ids=str)
def test_each_denial_reaches_the_caller_and_the_block_never_runs(
    reason: Reason, engine: PolicyEngine, revocations: Revocations, metrics: MetricsRuntime
) -> None:
    case = DENIALS[reason]
    claims = make_claims()
    token = case.get("token", lambda: forge(claims))
    if callable(token):
        token = token()
    if case.get("revoke"):
        revocations.jtis.add(claims["jti"])
    revocations.fresh = not case.get("stale", False)
    tool, scope = case.get("tool", TOOL), case.get("scope", "write")
    ran = False
    call = m1lib.tool_call(tool, scope, token=token, subject=case.get("subject", SUBJECT))
    with pytest.raises(ToolDenied) as caught, call:
        ran = True
    assert not ran
    decision = caught.value.decision
    assert (decision.allowed, decision.reason, decision.tool_name) == (False, reason, tool)
    assert str(reason) in str(caught.value)
    if isinstance(token, str):
        assert token not in str(caught.value)
    assert executions(metrics, "toolName") == []  # a denied call ran nothing: no execution


def test_tool_denied_is_a_403_over_http() -> None:
    from m1lib.api.problems import answer_for

    assert answer_for(ToolDenied).status == 403


def test_an_exception_in_the_block_is_recorded_by_class_and_raised_unchanged(
    engine: PolicyEngine, metrics: MetricsRuntime
) -> None:
    failure = Secret("password=hunter2")
    call = m1lib.tool_call(TOOL, "write", token=forge(), subject=SUBJECT)
    with pytest.raises(Secret) as caught, call:
        raise failure
    assert caught.value is failure
    assert (call.success, call.error) == (False, "Secret")
    rows = executions(metrics, "success", "error")
    assert [(r["success"], r["error"], r["count"]) for r in rows] == [(False, "Secret", 1)]
    found = metrics.run_query(
        {"metric": "tool_executions", "timeRange": "1h",
         "filters": [{"field": "error", "op": "contains", "value": "hunter2"}]}
    ).rows  # fmt: skip
    assert found == []  # no event holds the message


def test_the_async_form_verifies_times_and_records(
    engine: PolicyEngine, metrics: MetricsRuntime
) -> None:
    async def work() -> ToolCall:
        async with m1lib.tool_call(TOOL, "write", token=forge(), subject=SUBJECT) as call:
            await asyncio.sleep(0.01)
        with pytest.raises(ToolDenied):
            async with m1lib.tool_call(TOOL, "write", token=None, subject=SUBJECT):
                pass
        with pytest.raises(KeyError):
            async with m1lib.tool_call(TOOL, "write", token=forge(), subject=SUBJECT):
                raise KeyError("k")
        return call

    call = asyncio.run(work())
    assert call.success is True
    assert call.duration_ms is not None
    assert call.duration_ms >= 10.0
    rows = executions(metrics, "success", "error")
    assert [(r["success"], r["error"], r["count"]) for r in rows] == [
        (False, "KeyError", 1), (True, None, 1)
    ]  # fmt: skip


def test_a_cancelled_async_block_is_recorded_as_a_failure(
    engine: PolicyEngine, metrics: MetricsRuntime
) -> None:
    async def work() -> None:
        async with m1lib.tool_call(TOOL, "write", token=forge(), subject=SUBJECT):
            await asyncio.sleep(60)

    async def cancel_it() -> None:
        task = asyncio.create_task(work())
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancel_it())
    rows = executions(metrics, "success", "error")
    assert [(r["success"], r["error"]) for r in rows] == [(False, "CancelledError")]


def test_a_handle_is_entered_once(engine: PolicyEngine) -> None:
    call = m1lib.tool_call(TOOL, "write", token=forge(), subject=SUBJECT)
    with call:
        pass
    with pytest.raises(UsageError, match="entered once"), call:
        pass


def test_a_scope_that_is_no_scope_is_an_input_error(engine: PolicyEngine) -> None:
    call = m1lib.tool_call(TOOL, "admin", token=forge(), subject=SUBJECT)
    with pytest.raises(InputError, match="scope"), call:
        pass


def test_the_handle_keeps_the_component_for_cost_records(engine: PolicyEngine) -> None:
    with m1lib.tool_call(TOOL, "write", token=forge(), subject=SUBJECT, component="planner") as c:
        pass
    assert c.component == "planner"
