"""M1's live-path library: verify capability tokens, check revocation, record events, query.

The common calls are bound to the configured defaults (``M1_*`` settings) and load on first use,
so ``import m1lib`` starts nothing and stays cheap::

    import m1lib
    decision = m1lib.verify(token, "log_agent_run", "write", subject="agent-7")
    m1lib.record_event("tool_executions", toolName="web_search", scope="read", success=True,
                       durationMs=41.0)

Instrumented calls record those events themselves (``tool_executions``, ``cache_operations``,
``error_alerts``)::

    with m1lib.tool_call("web_search", "read", token=token, subject="agent-7"):  # or async with
        hits = m1lib.cached_call("web_search", query, lambda: search(query), ttl=60)
    m1lib.raise_alert("warning", "search", "slow upstream", metadata={"p99Ms": 950})

Model calls are priced exactly and recorded as ``cost_updates`` (``CostRecord.cost_usd``)::

    m1lib.record_cost("claude-sonnet-4-5", 1234, 567, tool_name="web_search",
                      component="research-agent")  # or call.cost(model, 1234, 567) in a tool_call
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from m1lib.alerts import raise_alert
    from m1lib.errors import ToolDenied
    from m1lib.metrics import record_event, record_events, run_query
    from m1lib.ops.cost.record import CostRecord, record_cost
    from m1lib.process_cache import cached_call
    from m1lib.process_engine import is_revoked, issue_token, revoke_token, verify
    from m1lib.tool_calls import tool_call

__all__ = [
    "CostRecord",
    "ToolDenied",
    "cached_call",
    "is_revoked",
    "issue_token",
    "raise_alert",
    "record_cost",
    "record_event",
    "record_events",
    "revoke_token",
    "run_query",
    "tool_call",
    "verify",
]

_HOME = {
    "CostRecord": "m1lib.ops.cost.record",
    "record_cost": "m1lib.ops.cost.record",
    "ToolDenied": "m1lib.errors",
    "cached_call": "m1lib.process_cache",
    "raise_alert": "m1lib.alerts",
    "tool_call": "m1lib.tool_calls",
    "is_revoked": "m1lib.process_engine",
    "issue_token": "m1lib.process_engine",
    "revoke_token": "m1lib.process_engine",
    "verify": "m1lib.process_engine",
    "record_event": "m1lib.metrics",
    "record_events": "m1lib.metrics",
    "run_query": "m1lib.metrics",
}


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'm1lib' has no attribute {name!r}")
    value = getattr(import_module(home), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
