"""The OpenAPI document tells the truth: error statuses as problem+json, limits, HEAD beside GET."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import pytest
from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from fastapi.testclient import TestClient

from m1lib.api.head import HeadAsGet
from m1lib.api.openapi import Problem
from m1lib.api.problems import PROBLEM_JSON
from tests.m1lib.api.conftest import Keys, bearer

AUTH = {401, 403, 429, 503}
# Every operation and the error statuses it can answer; a new route must say its own here.
ERRORS: dict[tuple[str, str], set[int]] = {
    ("get", "/health/live"): set(),
    ("get", "/health/ready"): {503},
    ("post", "/api/m1/session"): {401, 413, 422, 429, 503},
    ("delete", "/api/m1/session"): set(),
    ("get", "/api/m1/health"): AUTH,
    ("get", "/api/m1/replicas"): AUTH | {422},
    ("post", "/api/m1/control/commands"): AUTH | {400, 413, 422},
    ("get", "/api/m1/control/commands/{command_id}"): AUTH | {422},
    ("post", "/api/m1/tokens"): AUTH | {413, 422},
    ("post", "/api/m1/tokens/revoke"): AUTH | {400, 413, 415, 422},
    ("post", "/api/m1/tokens/revoke-all"): AUTH | {413, 415, 422},
    ("post", "/api/m1/tokens/introspect"): AUTH | {413, 415, 422},
    ("get", "/api/m1/tokens/revocations"): AUTH | {400, 422},
    ("get", "/api/m1/tokens/{jti}/status"): AUTH | {422},
    ("get", "/metrics"): AUTH,
    ("post", "/api/m1/dashboard/query"): AUTH | {400, 413, 422},
    ("get", "/api/m1/dashboard/templates"): AUTH,
    ("get", "/api/m1/dashboard/schema"): AUTH,
    ("get", "/api/m1/dashboard/stream"): AUTH | {400, 422},
    ("post", "/api/m1/events"): AUTH | {413, 415, 422},
    ("post", "/api/m1/healing/pause"): AUTH | {413, 422},
    ("post", "/api/m1/healing/resume"): AUTH | {413, 422},
    ("get", "/api/m1/incidents"): AUTH | {400, 422},
    ("get", "/api/m1/cache/policy"): AUTH,
    ("put", "/api/m1/cache/policy/{tool}"): AUTH | {400, 413, 422},
    ("delete", "/api/m1/cache/policy/{tool}"): AUTH | {422},
    ("get", "/api/m1/healing"): AUTH | {422},
}
STREAMS = {"/api/m1/dashboard/stream"}  # endless: tests/m1lib/api/test_stream.py covers HEAD
ERRORS.update(
    {("head", path): errors for (method, path), errors in list(ERRORS.items()) if method == "get"}
)
SAMPLE_PATH = {"{command_id}": "1", "{jti}": "jti-1", "{tool}": "weather"}


@pytest.fixture
def document(keyed_client: tuple[TestClient, Keys]) -> dict[str, Any]:
    client, _ = keyed_client
    body: dict[str, Any] = client.get("/openapi.json").json()
    return body


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            yield method, path, operation


def test_the_document_lists_every_operation_of_the_table(document: dict[str, Any]) -> None:
    assert {(method, path) for method, path, _ in operations(document)} == set(ERRORS)


def test_each_operation_lists_its_error_statuses_as_problem_json(
    document: dict[str, Any],
) -> None:
    for method, path, operation in operations(document):
        errors = {int(code) for code in operation["responses"] if int(code) >= 400}
        assert errors == ERRORS[method, path], f"{method} {path}"
        for code in errors:
            answer = operation["responses"][str(code)]
            assert answer["description"], f"{method} {path} {code}"
            if method != "head":  # HEAD answers carry no body
                schema = answer["content"][PROBLEM_JSON]["schema"]
                assert schema == {"$ref": "#/components/schemas/Problem"}, f"{method} {path}"
            if code in (429, 503):
                assert "Retry-After" in answer["headers"], f"{method} {path} {code}"


def test_no_operation_keeps_fastapis_own_validation_error(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    assert "HTTPValidationError" not in schemas
    assert set(schemas["Problem"]["required"]) == {"title", "status", "detail"}
    assert schemas["Problem"]["properties"]["errors"]["items"] == {
        "$ref": "#/components/schemas/ProblemError"
    }


def test_the_problem_schema_is_what_an_error_sends(keyed_client: tuple[TestClient, Keys]) -> None:
    client, keys = keyed_client
    unauthenticated = client.get("/api/m1/replicas")
    invalid = client.get("/api/m1/replicas?within_s=0", headers=bearer(keys.viewer))
    for response in (unauthenticated, invalid):
        assert response.headers["content-type"].startswith(PROBLEM_JSON)
        Problem.model_validate(response.json())
    assert Problem.model_validate(invalid.json()).errors[0].path == "/within_s"


def test_the_health_report_is_health_json_in_the_document_and_on_the_wire(
    document: dict[str, Any], keyed_client: tuple[TestClient, Keys]
) -> None:
    answers = document["paths"]["/api/m1/health"]["get"]["responses"]
    assert set(answers["200"]["content"]) == {"application/health+json"}
    assert set(answers["503"]["content"]) == {"application/health+json", PROBLEM_JSON}
    client, keys = keyed_client
    response = client.get("/api/m1/health", headers=bearer(keys.viewer))
    assert response.headers["content-type"].startswith("application/health+json")


def test_the_handlers_limits_are_in_the_schema(document: dict[str, Any]) -> None:
    def parameter(path: str, name: str) -> dict[str, Any]:
        found = next(p for p in document["paths"][path]["get"]["parameters"] if p["name"] == name)
        schema: dict[str, Any] = found["schema"]
        return schema.get("anyOf", [schema])[0]

    jti = parameter("/api/m1/tokens/{jti}/status", "jti")
    assert (jti["minLength"], jti["maxLength"], jti["pattern"][:6]) == (1, 64, "^[^\\u0")
    tool = parameter("/api/m1/tokens/revocations", "toolName")
    assert (tool["maxLength"], "pattern" in tool) == (128, True)
    cursor = parameter("/api/m1/tokens/revocations", "cursor")
    assert (cursor["maxLength"], cursor["pattern"]) == (200, "^[A-Za-z0-9_-]+$")
    limit = parameter("/api/m1/tokens/revocations", "limit")
    assert (limit["minimum"], limit["maximum"]) == (1, 1000)
    within = parameter("/api/m1/replicas", "within_s")
    assert (within["exclusiveMinimum"], within["maximum"]) == (0, 86400)
    command = parameter("/api/m1/control/commands/{command_id}", "command_id")
    assert (command["minimum"], command["maximum"]) == (1, 2**63 - 1)
    schemas = document["components"]["schemas"]
    name = schemas["CommandRequest"]["properties"]["name"]
    assert (name["maxLength"], "pattern" in name) == (64, True)
    revoke = document["paths"]["/api/m1/tokens/revoke"]["post"]["requestBody"]["content"]
    assert len(revoke["application/json"]["schema"]["anyOf"]) == 2  # token or jti
    form = revoke["application/x-www-form-urlencoded"]["schema"]
    assert (form["maxProperties"], form["additionalProperties"]) == (20, {"type": "string"})
    revoke_all = document["paths"]["/api/m1/tokens/revoke-all"]["post"]["requestBody"]
    issued = revoke_all["content"]["application/json"]["schema"]["properties"]["issuedBefore"]
    assert issued["anyOf"][0]["pattern"].startswith("^(19[7-9]")


def test_head_answers_every_get_with_its_headers_and_no_body(
    document: dict[str, Any], keyed_client: tuple[TestClient, Keys]
) -> None:
    client, keys = keyed_client
    for method, path, _ in operations(document):
        if method != "get" or path in STREAMS:
            continue
        url = path
        for template, value in SAMPLE_PATH.items():
            url = url.replace(template, value)
        got = client.get(url, headers=bearer(keys.viewer))
        head = client.head(url, headers=bearer(keys.viewer))
        assert head.status_code == got.status_code, path
        assert head.headers["content-type"] == got.headers["content-type"], path
        assert head.content == b"", path
        if path not in {"/metrics", "/api/m1/health"}:  # figures move between requests
            assert head.headers["content-length"] == got.headers["content-length"], path


def test_head_is_in_the_document_beside_every_get(document: dict[str, Any]) -> None:
    for path, methods in document["paths"].items():
        assert ("head" in methods) == ("get" in methods), path
        if "get" in methods:
            assert methods["head"]["operationId"] == methods["get"]["operationId"] + "_head"
            assert methods["head"].get("parameters") == methods["get"].get("parameters")


@pytest.mark.parametrize(
    ("method", "url", "allow"),
    [
        ("OPTIONS", "/api/m1/session", "DELETE, POST"),
        ("POST", "/health/live", "GET, HEAD"),
        ("PUT", "/api/m1/tokens/revocations", "GET, HEAD"),
    ],
)
def test_405_allows_every_method_of_the_path(
    keyed_client: tuple[TestClient, Keys], method: str, url: str, allow: str
) -> None:
    client, _ = keyed_client
    response = client.request(method, url)
    assert response.status_code == 405
    assert response.headers["allow"] == allow


@pytest.mark.timeout(60)
def test_head_of_a_stream_ends_after_its_headers() -> None:
    """A GET that streams forever (Server-Sent Events) still answers HEAD."""
    never = anyio.Event()

    async def forever() -> AsyncIterator[bytes]:
        yield b"event: tick\n\n"
        await never.wait()

    app = FastAPI()
    app.add_middleware(HeadAsGet)

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        return StreamingResponse(forever(), media_type="text/event-stream")

    with TestClient(app) as client:
        response = client.head("/stream")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.content == b""
