"""One error format for every route: RFC 9457 ``application/problem+json``.

How each error class is answered is one table, :data:`ANSWERS` (class -> status and headers),
walked along the error's MRO, so a subclass is answered as its nearest listed ancestor. An error
the table answers with 500 (a server fault: ``UsageError``, ``SettingsError``, an ``M1Error`` no
entry claims, any unexpected exception) says only that, with a random reference id that the
server log line with its traceback carries too: no traceback, message or secret in the body.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import iter_route_contexts
from starlette.exceptions import HTTPException as StarletteHTTPException

from m1lib.errors import (
    AuthenticationError,
    BusyError,
    DatabaseRefused,
    DatabaseUnavailable,
    InputError,
    M1Error,
    PermissionDeniedError,
    RateLimitedError,
    SettingsError,
    TokenRejectedError,
    ToolDenied,
    UnavailableError,
    UsageError,
)
from m1lib.metrics.budget import QueryCancelled
from m1lib.metrics.codec import CodecError

PROBLEM_JSON = "application/problem+json"
logger = logging.getLogger("m1.api")

_TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    413: "Content too large",
    415: "Unsupported media type",
    422: "Invalid request",
    429: "Too many requests",
    500: "Internal error",
    503: "Service unavailable",
}


def problem(
    status: int,
    detail: str,
    *,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
    **members: Any,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": _TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
    }
    if errors:
        body["errors"] = errors
    body.update(members)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _json_path(loc: tuple[Any, ...]) -> str:
    parts = (
        [str(part) for part in loc[1:]]
        if loc and loc[0] in {"body", "query", "path"}
        else [str(part) for part in loc]
    )
    return "/" + "/".join(parts)


def _validation_errors(error: RequestValidationError) -> list[dict[str, Any]]:
    items = []
    for item in error.errors():
        context = item.get("ctx") or {}
        path = _json_path(tuple(item.get("loc", ())))
        inner = context.get("at", "")  # a validator's pointer inside its field (m1lib.text)
        entry: dict[str, Any] = {
            "path": path + inner if path != "/" else inner or path,
            "problem": item["msg"],
        }
        entry.update(_allowed(context.get("expected")))
        items.append(entry)
    return items


def _allowed(expected: Any) -> dict[str, list[str]]:
    """``allowed`` from a validation error's ``expected``: pydantic's own is a quoted enumeration
    (``'read', 'write' or 'execute'``), M1's validators give a rule or a list of rules."""
    if not expected:
        return {}
    if isinstance(expected, list | tuple):
        return {"allowed": [str(item) for item in expected]}
    text = str(expected)
    if not text.startswith("'"):
        return {"allowed": [text]}
    return {"allowed": [part.strip(" '") for part in text.replace(" or ", ",").split(",")]}


def _methods_of_path(request: Request) -> list[str]:
    """Every method some route answers at this path (Starlette's 405 names only the first
    route's), with HEAD wherever GET is (m1lib.api.head)."""
    methods: set[str] = set()
    for route in iter_route_contexts(request.app.router.routes):  # included routers' routes too
        pattern = getattr(route, "path_regex", None)
        if pattern is not None and pattern.match(request.scope["path"]):
            methods.update(route.methods or ())
    if "GET" in methods:
        methods.add("HEAD")
    return sorted(methods)


def _retry_after(error: Any) -> dict[str, str]:
    return {"Retry-After": str(error.retry_after_s)}


def _bearer_challenge(_: Exception) -> dict[str, str]:
    return {"WWW-Authenticate": 'Bearer realm="m1"'}


def _input_errors(error: Any) -> list[dict[str, Any]]:
    entry: dict[str, Any] = {"path": error.path, "problem": error.problem}
    if error.allowed:
        entry["allowed"] = error.allowed
    return [entry]


@dataclass(frozen=True, slots=True)
class Answer:
    """How the API answers one class of error: a status (its title follows from it), headers
    made from the error, and ``errors`` items where the error names its input."""

    status: int
    headers: Callable[[Any], dict[str, str]] | None = field(default=None, kw_only=True)
    errors: Callable[[Any], list[dict[str, Any]]] | None = field(default=None, kw_only=True)


INTERNAL: Final = Answer(500)
_UNAVAILABLE: Final = Answer(503, headers=_retry_after)
ANSWERS: Final[Mapping[type[Exception], Answer]] = MappingProxyType(
    {
        InputError: Answer(400, errors=_input_errors),
        TokenRejectedError: Answer(400),
        DatabaseRefused: Answer(400),
        AuthenticationError: Answer(401, headers=_bearer_challenge),
        PermissionDeniedError: Answer(403),
        ToolDenied: Answer(403),  # a handler's m1lib.tool_call the policy denied
        RateLimitedError: Answer(429, headers=_retry_after),
        UnavailableError: _UNAVAILABLE,
        DatabaseUnavailable: _UNAVAILABLE,
        BusyError: _UNAVAILABLE,
        QueryCancelled: Answer(400),  # the caller went away: nobody reads it, nothing to log
        # Server faults: the caller can do nothing about them, so they are no 4xx.
        UsageError: INTERNAL,
        SettingsError: INTERNAL,
        CodecError: INTERNAL,
        M1Error: INTERNAL,  # a class the table does not know yet
        Exception: INTERNAL,
    }
)
"""Every error an M1 route may raise, by class; :func:`answer_for` walks an error's MRO here."""


def answer_for(error_class: type[BaseException]) -> Answer:
    """The answer of ``error_class``'s nearest ancestor in :data:`ANSWERS` (500 for none)."""
    for cls in error_class.__mro__:
        answer = ANSWERS.get(cls)
        if answer is not None:
            return answer
    return INTERNAL


def answer(request: Request, error: Exception) -> JSONResponse:
    """The problem+json response to ``error``; a 500 is logged with its traceback and reference."""
    found = answer_for(type(error))
    if found.status == 500:  # a server fault, not an answer: the log has the rest
        reference = uuid.uuid4().hex[:12]
        logger.error(
            "unhandled error %s on %s %s",
            reference,
            request.method,
            request.url.path,
            exc_info=error,
        )
        return problem(
            found.status,
            f"internal error (reference {reference}); the server log has details",
            reference=reference,
        )
    return problem(
        found.status,
        str(error),
        errors=found.errors(error) if found.errors else None,
        headers=found.headers(error) if found.headers else None,
    )


def install_problem_handlers(app: FastAPI) -> None:
    """The table for M1's errors and anything unexpected; the framework's own two apart, as their
    status and errors come from the exception, not its class."""

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, error: RequestValidationError) -> JSONResponse:
        return problem(422, "the request does not validate", errors=_validation_errors(error))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, error: StarletteHTTPException) -> JSONResponse:
        headers = dict(error.headers or {})
        if error.status_code == 405:
            headers["Allow"] = ", ".join(_methods_of_path(request))
        return problem(error.status_code, str(error.detail), headers=headers)

    async def _answer(request: Request, error: Exception) -> JSONResponse:
        return answer(request, error)

    app.add_exception_handler(M1Error, _answer)  # before the response starts: no re-raise
    app.add_exception_handler(Exception, _answer)  # Starlette's server-error middleware
