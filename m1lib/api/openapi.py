"""The OpenAPI document, telling the truth: each route's error statuses, HEAD beside every GET.

Routes declare the errors they can answer with :func:`problems` (``responses=problems(401, 422)``),
so the problem+json schema lives here once, as ``#/components/schemas/Problem``, and 429/503 carry
their ``Retry-After`` header. :func:`install_openapi` adds that schema to the generated document and
a ``head`` operation beside every ``get`` (the :mod:`m1lib.api.head` middleware answers it), so a
client generated from the document, or a fuzzer driven by it, sees what the server does.

No route lists 500: it is no answer a route is made to give but a server fault (``UsageError``, an
unexpected exception; :data:`m1lib.api.problems.ANSWERS`), which the schema-driven fuzz test hunts
for. Should one happen, it is a Problem too, whose ``reference`` names the server log line.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, Final

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, Field

from m1lib.api.problems import PROBLEM_JSON

__all__ = ["AUTHENTICATED", "Problem", "ProblemError", "install_openapi", "problems"]

_REF: Final = "#/components/schemas/Problem"
_RETRY_AFTER: Final = {
    "Retry-After": {
        "description": "Seconds after which trying again makes sense.",
        "required": True,
        "schema": {"type": "integer", "minimum": 0},
    }
}
_WHY: Final[Mapping[int, str]] = {
    400: "A valid request the server cannot answer; `errors` names the input and what is allowed.",
    401: "No credential, or an unknown or revoked one.",
    403: "The credential's role does not allow this route (or no admin credential exists).",
    413: "The body is larger than this route reads.",
    415: "The body's content type is not one this route reads.",
    422: "The request does not validate; `errors` names each path, the problem and what is allowed.",
    429: "Over the rate limit of the credential or the client address.",
    503: "A dependency (the database, the event store, the signing key) is unavailable.",
}
AUTHENTICATED: Final = (401, 403, 429, 503)
"""What every route behind a credential can answer: no or bad key, wrong role, over the limit,
and the database holding the credentials unavailable."""


class ProblemError(BaseModel):
    """One thing wrong with the request."""

    path: str = Field(description="JSON pointer of the input (`/filters/0/op`), or its name.")
    problem: str
    allowed: list[str] = Field(default_factory=list, description="What would be accepted.")


class Problem(BaseModel):
    """An RFC 9457 problem: every error M1 answers has this shape."""

    type: str = "about:blank"
    title: str
    status: int = Field(ge=400, le=599)
    detail: str
    errors: list[ProblemError] = Field(default_factory=list)
    reference: str | None = Field(
        None, description="On a 500 only: the id of the server log line that has the details."
    )


def problems(
    *statuses: int, why: Mapping[int, str] | None = None
) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route that can answer these error statuses, as problem+json.

    ``why`` replaces the generic description of a status where the route can say more.
    """
    reasons = {**_WHY, **(why or {})}
    answers: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        answer: dict[str, Any] = {
            "description": reasons[status],
            "content": {PROBLEM_JSON: {"schema": {"$ref": _REF}}},
        }
        if status in (429, 503):
            answer["headers"] = copy.deepcopy(_RETRY_AFTER)
        answers[status] = answer
    return answers


def _head_operation(get: dict[str, Any]) -> dict[str, Any]:
    """The GET operation's twin for HEAD: same parameters, statuses and headers, no body."""
    head = copy.deepcopy(get)
    head["operationId"] = f"{get.get('operationId', 'get')}_head"
    head["summary"] = f"{get.get('summary', '')} (headers only)".strip()
    for answer in head.get("responses", {}).values():
        answer.pop("content", None)
    return head


def install_openapi(app: FastAPI) -> None:
    """Build the document once, with the Problem schema and HEAD operations added."""

    def build() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title,
                version=app.version,
                summary=app.summary,
                description=app.description,
                routes=app.routes,
            )
            schemas = document.setdefault("components", {}).setdefault("schemas", {})
            schemas["Problem"] = Problem.model_json_schema(
                ref_template=_REF.rsplit("/", 1)[0] + "/{model}"
            )
            schemas.update(schemas["Problem"].pop("$defs", {}))
            for operations in document.get("paths", {}).values():
                if "get" in operations and "head" not in operations:
                    operations["head"] = _head_operation(operations["get"])
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = build  # type: ignore[method-assign]
