"""One error format for every route: RFC 9457 ``application/problem+json``.

Handlers are registered once, keyed by exception class, so no route can answer with a traceback:
an unexpected error becomes a 500 that says only that, and is logged with its id.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import iter_route_contexts
from starlette.exceptions import HTTPException as StarletteHTTPException

from m1lib.errors import (
    AuthenticationError,
    InputError,
    M1Error,
    PermissionDeniedError,
    RateLimitedError,
    UnavailableError,
)

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


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, error: RequestValidationError) -> JSONResponse:
        return problem(422, "the request does not validate", errors=_validation_errors(error))

    @app.exception_handler(InputError)
    async def _input(_: Request, error: InputError) -> JSONResponse:
        entry: dict[str, Any] = {"path": error.path, "problem": error.problem}
        if error.allowed:
            entry["allowed"] = error.allowed
        return problem(400, str(error), errors=[entry])

    @app.exception_handler(UnavailableError)
    async def _unavailable(_: Request, error: UnavailableError) -> JSONResponse:
        return problem(503, str(error), headers={"Retry-After": str(error.retry_after_s)})

    @app.exception_handler(AuthenticationError)
    async def _unauthenticated(_: Request, error: AuthenticationError) -> JSONResponse:
        return problem(401, str(error), headers={"WWW-Authenticate": 'Bearer realm="m1"'})

    @app.exception_handler(PermissionDeniedError)
    async def _forbidden(_: Request, error: PermissionDeniedError) -> JSONResponse:
        return problem(403, str(error))

    @app.exception_handler(RateLimitedError)
    async def _limited(_: Request, error: RateLimitedError) -> JSONResponse:
        return problem(429, str(error), headers={"Retry-After": str(error.retry_after_s)})

    @app.exception_handler(M1Error)
    async def _m1(_: Request, error: M1Error) -> JSONResponse:
        return problem(400, str(error))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, error: StarletteHTTPException) -> JSONResponse:
        headers = dict(error.headers or {})
        if error.status_code == 405:
            headers["Allow"] = ", ".join(_methods_of_path(request))
        return problem(error.status_code, str(error.detail), headers=headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception) -> JSONResponse:
        incident = uuid.uuid4().hex[:12]
        logger.error(
            "unhandled error %s on %s %s",
            incident,
            request.method,
            request.url.path,
            exc_info=error,
        )
        return problem(500, f"internal error (reference {incident}); the server log has details")
