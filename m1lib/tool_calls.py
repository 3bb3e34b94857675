"""``m1lib.tool_call``: run a tool under the policy engine's decision and record how it went.

::

    with m1lib.tool_call("web_search", "read", token=token, subject="agent-7") as call:
        results = search(query)
    # or: async with m1lib.tool_call(...) as call: ...

Entering verifies through the process's policy engine (:func:`m1lib.process_engine.default_engine`);
a denial raises :class:`~m1lib.errors.ToolDenied` carrying the decision, and the block does not
run (the engine has recorded the ``policy_decisions`` event; no ``tool_executions`` is recorded).
Leaving times the block and records ``tool_executions``: success, durationMs, and on failure the
exception's class name in ``error`` (never its message, which may hold secrets); the exception
goes on unchanged. Both sides do no I/O: the event is one append to the recorder's queue.

``call.cost(model, input_tokens, output_tokens)`` prices a model call made for this tool call and
records it (:func:`m1lib.record_cost` under the call's tool and ``component``).
"""

from __future__ import annotations

import time
from types import TracebackType
from typing import TYPE_CHECKING, Final

from m1lib import process_engine as _engine
from m1lib.errors import ToolDenied, UsageError
from m1lib.metrics import pipeline as _pipeline
from m1lib.ops.cost.record import DEFAULT_COMPONENT, record_cost
from m1lib.vocabulary import Scope

if TYPE_CHECKING:
    from m1lib.ops.cost.record import CostRecord
    from m1lib.policy import PolicyDecision

__all__ = ["ToolCall", "tool_call"]

_perf_counter = time.perf_counter
_time_ns = time.time_ns
_TOOL_EXECUTIONS: Final = "tool_executions"
_SCOPE_TEXT: Final = {scope: scope.value for scope in Scope}  # plain str for record_trusted


class ToolCall:
    """One tool call: the policy decision, then the block's timing and outcome.

    ``m1lib.tool_call(...)`` makes one; a context manager, sync or async, entered once. After the
    block: ``success``, ``duration_ms`` and ``error`` (the exception's class name, or None).
    ``cost(model, input_tokens, output_tokens)`` prices a model call made for this tool call and
    records it under its tool and ``component``.
    """

    __slots__ = (
        "_started",
        "_token",
        "component",
        "decision",
        "duration_ms",
        "error",
        "scope",
        "subject",
        "success",
        "tool_name",
    )

    def __init__(
        self,
        tool_name: str,
        scope: Scope | str,
        *,
        token: str | None,
        subject: str | None,
        component: str | None = None,
    ) -> None:
        # Slots, every one set here: cheaper stores and lookups than a __dict__ (hot path).
        self.tool_name = tool_name
        self.scope = scope
        self.subject = subject
        self.component = component
        self._token: str | None = token
        self.decision: PolicyDecision | None = None
        self.success: bool | None = None
        self.duration_ms: float | None = None
        self.error: str | None = None
        self._started = 0.0

    def __repr__(self) -> str:  # never the token
        reason = None if self.decision is None else self.decision.reason.value
        return (
            f"ToolCall({self.tool_name!r}, {str(self.scope)!r}, reason={reason!r}, "
            f"success={self.success!r}, duration_ms={self.duration_ms!r})"
        )

    def __enter__(self) -> ToolCall:
        if self.decision is not None:
            raise UsageError("a ToolCall is entered once; call m1lib.tool_call again")
        engine = _engine._engine or _engine.default_engine()
        decision = engine.verify(self._token, self.tool_name, self.scope, subject=self.subject)  # type: ignore[arg-type]
        self._token = None  # not kept longer than the check
        self.decision = decision
        if not decision.allowed:
            raise ToolDenied(decision)
        self._started = _perf_counter()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        duration_ms = (_perf_counter() - self._started) * 1000.0
        decision = self.decision
        assert decision is not None
        error = None if exc_type is None else exc_type.__name__
        self.success = exc_type is None
        self.duration_ms = duration_ms
        self.error = error
        # Recorder.record_trusted inlined (one call less): the row as its declared fields.
        row = (
            _time_ns() // 1000,
            decision.tool_name,
            _SCOPE_TEXT[decision.scope],
            exc_type is None,
            duration_ms,
            error,
        )
        (_pipeline._default or _pipeline.default_runtime()).recorder._enqueue(
            (_TOOL_EXECUTIONS, row)
        )

    def cost(self, model: str, input_tokens: int, output_tokens: int) -> CostRecord:
        """Price a model call made for this tool call and record its ``cost_updates`` event:
        :func:`m1lib.record_cost` with this call's ``tool_name`` and ``component`` (or
        ``"unattributed"`` when ``tool_call`` was given none). Callable inside the block or after
        it (the tokens were spent either way); the same InputErrors as ``record_cost``.
        """
        return record_cost(
            model,
            input_tokens,
            output_tokens,
            tool_name=self.tool_name,
            component=self.component or DEFAULT_COMPONENT,
        )

    async def __aenter__(self) -> ToolCall:
        return self.__enter__()  # verify does no I/O: nothing to await

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, traceback)


tool_call = ToolCall
"""``tool_call(tool_name, scope, *, token, subject, component=None) -> ToolCall``: enter it with
``with`` or ``async with`` around the tool's work (the class itself: one call less per use).

Raises (on entering) :class:`~m1lib.errors.ToolDenied` with ``.decision`` when the policy engine
denies ``token`` for ``tool_name`` at ``scope`` (for ``subject``), InputError for a ``scope`` that
is not one. ``component`` names the calling part (an agent or service: a few names, not one per
caller) for the cost records of :meth:`ToolCall.cost`; None records them as ``"unattributed"``.
"""
