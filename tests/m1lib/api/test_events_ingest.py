"""POST /api/m1/events: a batch recorded into the replica's store, all or none, bounded, limited."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from m1lib import auth
from m1lib.api.problems import PROBLEM_JSON
from m1lib.api.routes.events import MAX_ERRORS
from tests.m1lib.api.conftest import bearer
from tests.waiting import wait_for

EVENTS = "/api/m1/events"
QUERY = "/api/m1/dashboard/query"


def execution(tool: str = "web_search", **fields: Any) -> dict[str, Any]:
    event = {"metric": "tool_executions", "toolName": tool, "scope": "read", "success": True}
    return {**event, "durationMs": 12.5, **fields}


def alert(message: str = "disk slow", **fields: Any) -> dict[str, Any]:
    return {"metric": "error_alerts", "level": "warning", "source": "ingest-test", "message": message, **fields}  # fmt: skip


class Api:
    """A started replica's client with a key of each role."""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.runtime = client.app.state.runtime  # type: ignore[attr-defined]
        self.keys = {
            role: auth.create_credential(self.runtime.db, f"ops-{role}", role, created_by="test")
            for role in ("viewer", "agent", "admin")
        }

    def post(self, body: Any, role: str = "agent", **kwargs: Any) -> Any:
        return self.client.post(EVENTS, json=body, headers=bearer(self.keys[role]), **kwargs)

    def count(self, metric: str, **filters: Any) -> int:
        query = {
            "metric": metric,
            "timeRange": "24h",
            "filters": [{"field": k, "op": "eq", "value": v} for k, v in filters.items()],
            "aggregations": ["count"],
        }
        response = self.client.post(QUERY, json=query, headers=bearer(self.keys["viewer"]))
        assert response.status_code == 200, response.text
        rows = response.json()["rows"]
        return int(rows[0]["count"]) if rows else 0


@pytest.fixture
def make_api(make_client: Callable[..., TestClient]) -> Callable[..., Api]:
    def factory(**overrides: Any) -> Api:
        api = Api(make_client(jwt={"secret": "s" * 40}, **overrides))
        api.runtime.start()  # the ingest thread running, as in a served replica
        return api

    return factory


@pytest.fixture
def api(make_api: Callable[..., Api]) -> Api:
    return make_api()


def test_a_batch_is_recorded_and_a_query_on_the_replica_finds_it(api: Api) -> None:
    hour_ago = time.time() - 3600
    batch = [execution("ingest_tool") for _ in range(5)]
    batch += [execution("ingest_tool", success=False, timestamp=hour_ago), alert(source="afar")]
    response = api.post(batch)
    assert response.status_code == 202, response.text
    assert response.json() == {"accepted": 7, "dropped": 0}
    wait_for(
        lambda: api.count("tool_executions", toolName="ingest_tool"),
        "the six executions in the store",
        until=lambda n: n == 6,
    )
    assert api.count("tool_executions", toolName="ingest_tool", success=False) == 1
    assert api.count("error_alerts", source="afar") == 1


def test_an_admin_may_ingest_and_an_empty_batch_is_nothing(api: Api) -> None:
    assert api.post([execution("by_admin")], role="admin").json() == {"accepted": 1, "dropped": 0}
    assert api.post([]).json() == {"accepted": 0, "dropped": 0}


def test_one_bad_event_refuses_the_whole_batch_naming_index_and_field(api: Api) -> None:
    batch: list[Any] = [execution("all_or_none") for _ in range(6)]
    batch[1] = execution("all_or_none", durationMs="slow")
    batch[3] = {"metric": "tool_executions", "scope": "read", "success": True, "durationMs": 1.0}
    batch[4] = execution("all_or_none", colour="red")
    batch.append({"metric": "no_such_metric"})
    batch.append(execution("all_or_none", timestamp="yesterday"))
    batch.append("not an event")
    response = api.post(batch)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    problem = response.json()
    assert problem["detail"] == "6 of 9 events are invalid, so none was recorded"
    assert [(e["path"], e["problem"]) for e in problem["errors"]] == [
        ("/1/durationMs", "'slow' is str"),
        ("/3/toolName", "is missing"),
        ("/4/colour", "'colour' is not a field of tool_executions"),
        ("/6/metric", "'no_such_metric' is not a metric"),
        ("/7/timestamp", "'yesterday' is not a timestamp"),
        ("/8", "is str"),
    ]
    assert "tool_executions" in problem["errors"][3]["allowed"]
    api.runtime.metrics.flush()
    assert api.count("tool_executions", toolName="all_or_none") == 0  # none of the good five


def test_the_errors_listed_are_bounded_and_the_detail_counts_them_all(api: Api) -> None:
    batch = [execution(durationMs=-1e30) for _ in range(MAX_ERRORS + 50)]
    problem = api.post(batch).json()
    assert len(problem["errors"]) == MAX_ERRORS
    assert problem["errors"][-1]["path"] == f"/{MAX_ERRORS - 1}/durationMs"
    assert problem["detail"].startswith(f"{MAX_ERRORS + 50} of {MAX_ERRORS + 50} events")
    assert problem["detail"].endswith(f"the first {MAX_ERRORS} are listed")


@pytest.mark.parametrize(
    ("bad", "path", "problem"),
    [
        ({"toolName": "a\x00b"}, "/0/toolName", "holds a NUL character at position 1"),
        ({"scope": "read\x07"}, "/0/scope", "holds a control character (U+0007) at position 4"),
        ({"error": "x\x9b"}, "/0/error", "holds a control character (U+009B)"),
    ],
)
def test_bad_text_is_refused_at_the_boundary(
    api: Api, bad: dict[str, Any], path: str, problem: str
) -> None:
    response = api.post([execution(**bad), execution("fine")])
    assert response.status_code == 422
    errors = response.json()["errors"]
    assert [e["path"] for e in errors] == [path]
    assert errors[0]["problem"].startswith(problem)
    assert api.count("tool_executions", toolName="fine") == 0


def test_prose_keeps_tabs_and_line_breaks(api: Api) -> None:
    response = api.post([alert("line one\n\tline two")])
    assert response.status_code == 202, response.text


@pytest.mark.parametrize(
    "body",
    [{"metric": "error_alerts"}, "events", None, 3],
    ids=["object", "text", "null", "number"],
)
def test_the_body_must_be_an_array(api: Api, body: Any) -> None:
    response = api.post(body)
    assert response.status_code == 422
    assert response.json()["errors"][0]["path"] == "/"
    assert "JSON array of events" in response.json()["errors"][0]["problem"]


def test_an_empty_body_is_not_an_array(api: Api) -> None:
    response = api.client.post(EVENTS, headers=bearer(api.keys["agent"]))
    assert response.status_code == 422


def test_a_form_is_a_415(api: Api) -> None:
    response = api.client.post(
        EVENTS,
        content="metric=x",
        headers={**bearer(api.keys["agent"]), "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 415


def test_over_the_byte_limit_is_a_413_before_reading(make_api: Callable[..., Api]) -> None:
    api = make_api(events={"ingest_max_bytes": 2048})
    small = [alert("x" * 100)]
    assert api.post(small).status_code == 202
    big = json.dumps([alert("x" * 1000) for _ in range(3)]).encode()
    response = api.client.post(
        EVENTS,
        content=big,
        headers={**bearer(api.keys["agent"]), "Content-Type": "application/json"},
    )
    assert response.status_code == 413
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    assert "at most 2048 bytes" in response.json()["detail"]
    chunked = iter([big[:1500], big[1500:]])  # no Content-Length: cut off while reading
    response = api.client.post(
        EVENTS,
        content=chunked,
        headers={**bearer(api.keys["agent"]), "Content-Type": "application/json"},
    )
    assert response.status_code == 413


def test_too_many_events_is_a_413_naming_the_setting(make_api: Callable[..., Api]) -> None:
    api = make_api(events={"ingest_max_events": 3})
    assert api.post([execution("few")] * 3).status_code == 202
    response = api.post([execution("many")] * 4)
    assert response.status_code == 413
    assert response.json()["detail"] == (
        "the body holds 4 events; allowed: at most 3 per request (M1_EVENTS_INGEST_MAX_EVENTS)"
    )
    api.runtime.metrics.flush()
    assert api.count("tool_executions", toolName="many") == 0


def test_ingest_has_its_own_rate_limit_class(make_api: Callable[..., Api]) -> None:
    api = make_api(ratelimit={"ingest_per_min": 2, "query_per_min": 1000})
    codes = [api.post([execution("limited")]).status_code for _ in range(3)]
    assert codes == [202, 202, 429]
    refused = api.post([execution("limited")])
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) >= 1
    assert "2 ingest requests per minute" in refused.json()["detail"]
    # the other classes are untouched: the agent still introspects, a viewer still queries
    introspect = api.client.post(
        "/api/m1/tokens/introspect", json={"token": "a.b.c"}, headers=bearer(api.keys["agent"])
    )
    assert introspect.status_code == 200


def test_viewer_may_not_ingest(api: Api) -> None:
    response = api.post([execution("from_viewer")], role="viewer")
    assert response.status_code == 403
    assert "record_events permission" in response.json()["detail"]
    assert "agent, service or admin role" in response.json()["detail"]


def test_no_key_is_a_401(api: Api) -> None:
    assert api.client.post(EVENTS, json=[execution()]).status_code == 401


def test_the_openapi_body_is_one_schema_per_metric(api: Api) -> None:
    operation = api.client.get("/openapi.json").json()["paths"][EVENTS]["post"]
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    variants = schema["items"]["oneOf"]
    names = [variant["properties"]["metric"]["const"] for variant in variants]
    assert len(names) == len(set(names))
    assert "tool_executions" in names
    executions = variants[names.index("tool_executions")]
    assert executions["additionalProperties"] is False
    assert {"metric", "toolName", "scope", "success", "durationMs"} <= set(executions["required"])
    assert set(operation["responses"]) >= {"202", "401", "403", "413", "415", "422", "429", "503"}


@pytest.mark.parametrize("ascii_only", [True, False], ids=["escaped", "raw"])
@pytest.mark.parametrize(
    "char", ["\x00", "\x08", "\x0b", "\x0c", "\x0e", "\x1f", "\x7f", "\x80", "\x9f"]
)
def test_every_character_prose_refuses_is_found_escaped_or_raw(
    api: Api, ascii_only: bool, char: str
) -> None:
    """The body is scanned once for what could break the text rule; nothing may slip past it."""
    batch = [execution("scan"), execution("scan", error=f"a{char}b")]
    response = api.client.post(
        EVENTS,
        content=json.dumps(batch, ensure_ascii=ascii_only).encode(),
        headers={**bearer(api.keys["agent"]), "Content-Type": "application/json"},
    )
    assert response.status_code == 422, (char, response.text)
    assert [e["path"] for e in response.json()["errors"]] == ["/1/error"]


def test_an_escaped_backslash_before_u0000_is_text_and_accepted(api: Api) -> None:
    response = api.post([execution("escaped", error="C:\\u0000\\path\ttab\r\n")])
    assert response.status_code == 202, response.text
