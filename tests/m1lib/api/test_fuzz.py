"""Schema-driven fuzzing (schemathesis): every route of the OpenAPI document, with a viewer key, an
agent key (most routes refuse it: 403 must be all it gets there) and an admin key, in process
against the ASGI app of a started replica with events in its store.

All of schemathesis' checks run: no 5xx, every status, content type, header and body as documented,
schema-violating input refused, schema-valid input not refused as malformed, HEAD and unlisted methods
as documented. Derandomised (a fixed seed, no example database) and bounded (max examples per
operation), so a run replays the same requests and stays near a minute and a half on two cores.
Streaming routes never complete and are left to their own tests.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from schemathesis.config import SchemathesisConfig

from m1lib import auth
from m1lib.metrics import MetricsRuntime
from tests.m1lib.api.conftest import UNGRADED_HEALTH

RAISED_LIMITS = {f"{kind}_per_min": 10**6 for kind in ("read", "query", "admin", "login", "ingest")}


@pytest.fixture(params=["viewer", "agent", "admin"])
def api_schema(
    request: pytest.FixtureRequest, make_client: Callable[..., TestClient], prefect_port: int
) -> Any:
    # schemathesis 4.32 renames the test node through `_nodeid`, which pytest 9.2 no longer has.
    request.node._nodeid = request.node.nodeid
    client = make_client(
        jwt={"secret": "s" * 40},
        ratelimit=RAISED_LIMITS,
        prefect={"port": prefect_port},
        health=UNGRADED_HEALTH,
    )
    runtime = client.app.state.runtime  # type: ignore[attr-defined]
    runtime.start()  # a healthy replica: revocation state fresh, event store running
    _record_events(runtime.metrics)
    db = runtime.db
    key = auth.create_credential(db, f"fuzz-{request.param}", request.param, created_by="test")
    config = SchemathesisConfig.from_dict(
        {
            "seed": 8,
            "headers": {"Authorization": f"Bearer {key}"},
            "generation": {"max-examples": 20, "database": "none", "deterministic": True},
            "phases": {"stateful": {"enabled": False}},
            "checks": {
                # 400 is the contract's "valid request the server cannot answer" (an unknown
                # command, a cursor this listing never gave): schema-valid input may get it, never
                # a 422, 413 or 415.
                "positive_data_acceptance": {
                    "expected-statuses": ["2xx", "400", "401", "403", "404", "409", "429", "5xx"]
                },
                # Schema-violating input may also be too large to read at all: 413 refuses it
                # before parsing (the body bound of m1lib/api/bodies.py), which is a refusal too.
                "negative_data_rejection": {
                    "expected-statuses": [
                        "400",
                        "401",
                        "403",
                        "404",
                        "405",
                        "406",
                        "409",
                        "413",
                        "415",
                        "422",
                        "428",
                        "429",
                        "5xx",
                    ]
                },
            },
            "operations": [
                {
                    # Endless Server-Sent Events (GET and its HEAD twin): tests/m1lib/api/
                    # test_stream.py covers them; `exclude(func=_streams)` below does not reach
                    # the operations `from_fixture` parametrizes.
                    "include-path": "/api/m1/dashboard/stream",
                    "enabled": False,
                },
                {
                    # Whether a schema-valid grant is issued is the deployment's: its tool
                    # registry and M1_TOKEN_TTL_S (a 422 naming the member otherwise).
                    "include-path": "/api/m1/tokens",
                    "include-method": "POST",
                    "checks": {"positive_data_acceptance": {"enabled": False}},
                },
                {
                    # The DSL's cross-member rules (a filter is a condition or a group, members
                    # that belong to one aggregation op) are the model's; its JSON schema (owned
                    # by m1lib/metrics) does not state them yet, so a schema-valid query may 422.
                    "include-path": "/api/m1/dashboard/query",
                    "include-method": "POST",
                    "checks": {"positive_data_acceptance": {"enabled": False}},
                },
            ],
        }
    )
    loaded = schemathesis.openapi.from_asgi("/openapi.json", client.app, config=config)
    return loaded.exclude(func=_streams)


def _streams(context: Any) -> bool:
    """Server-Sent Events never complete: those routes have tests of their own."""
    answers = context.operation.definition.raw.get("responses", {}).values()
    return any("text/event-stream" in (answer.get("content") or {}) for answer in answers)


def _record_events(metrics: MetricsRuntime) -> None:
    """A few events of every metric, so queries have rows to filter, group and detect on."""
    for i in range(12):
        tool, scope, ok = (
            ("web_search", "read", True) if i % 2 else ("shell", "execute", i % 3 == 0)
        )
        metrics.record_event(
            "policy_decisions", toolName=tool, scope=scope, allowed=ok, reason="ok" if ok else "revoked",
            subject=f"agent-{i % 3}", checkMs=0.1 * i,
        )  # fmt: skip
        metrics.record_event(
            "tool_executions", toolName=tool, scope=scope, success=ok, durationMs=5.0 * i
        )
        metrics.record_event(
            "cache_operations", cache="tools", toolName=tool, op="get", hit=ok, latencyMs=0.5
        )
        metrics.record_event(
            "cost_updates", model="gpt-x", toolName=tool, component="agent", inputTokens=10 * i,
            outputTokens=i, costUsd=0.001 * i,
        )  # fmt: skip
        metrics.record_event("error_alerts", level="warning", source="fuzz", message=f"m{i}")
        metrics.record_event("health_checks", component="cache", status="healthy", latencyMs=1.0)
    assert metrics.flush()


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
def test_no_5xx_and_no_response_off_the_schema(case: Any) -> None:
    case.call_and_validate()
