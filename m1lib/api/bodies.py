"""Request bodies: read within a size bound, parsed as strict JSON that says where it breaks.

Every router uses :class:`BodyRoute` (or a :func:`body_route` with a larger bound), so before any
handler or FastAPI's own parsing runs, the body of a route that reads one is

- read at most ``max_body_bytes`` far: a larger one is a 413 (a declared Content-Length over the
  bound is refused before a byte is read);
- when it is JSON (``application/json`` or ``+json``), parsed by :func:`parse_json`: not UTF-8,
  nested deeper than :data:`MAX_JSON_DEPTH`, malformed, ``NaN``/``Infinity``, an integer of more
  digits than Python converts, or a lone surrogate is a 422 problem naming where: the byte offset,
  line and column, or the JSON pointer of the string. What a number may be is each field's rule
  (the models name its JSON path).

FastAPI would otherwise answer a generic 400 ("There was an error parsing the body") for invalid
UTF-8 or deep nesting (and a ValueError, a 500, for an integer of 5000 digits), and Python's
``json`` reads UTF-16 as well and accepts ``NaN``; RFC 8259 allows none of these.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Coroutine, Sequence
from contextlib import aclosing
from typing import Any, ClassVar, Final, NoReturn

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.types import Receive, Scope

__all__ = [
    "JSON_RULE",
    "MAX_BODY_BYTES",
    "MAX_JSON_DEPTH",
    "BodyRoute",
    "body_route",
    "decode_utf8",
    "invalid_body",
    "is_json_media_type",
    "media_type",
    "parse_json",
]

MAX_BODY_BYTES: Final = 64 * 1024  # what a token, a reason or a key needs, many times over
MAX_JSON_DEPTH: Final = 32  # objects and arrays; the DSL's deepest filters fit many times over
_MAX_DIGITS: Final = 4300  # sys.get_int_max_str_digits(): longer integers raise ValueError
JSON_RULE: Final = (
    f"UTF-8 JSON (RFC 8259) nested at most {MAX_JSON_DEPTH} levels",
    f"numbers (no NaN or Infinity; integers of at most {_MAX_DIGITS} digits)",
    "no lone surrogate",
)
_BODY_METHODS: Final = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# A JSON string (quotes and escapes included), or one bracket. Outside strings only brackets count.
_STRING_OR_BRACKET: Final = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')
_SURROGATE: Final = re.compile("[\ud800-\udfff]")


# -- parsing -----------------------------------------------------------------------------------


def invalid_body(
    problem: str, pointer: str = "", *, allowed: Sequence[str] = JSON_RULE
) -> RequestValidationError:
    """The 422 for a body: ``pointer`` is the JSON pointer (``/filters/0``), empty for the whole."""
    parts = tuple(part for part in pointer.split("/")[1:])
    context = {"expected": list(allowed)}
    entry = {"loc": ("body", *parts), "msg": problem, "type": "body", "ctx": context}
    return RequestValidationError([entry])


class _NotJson(ValueError):
    """A literal refused here: ``NaN``/``Infinity`` (not JSON), or an integer too long to read."""

    def __init__(self, literal: str, problem: str) -> None:
        super().__init__(problem)
        self.literal = literal
        self.problem = problem


def _bounded_int(literal: str) -> int:
    if len(literal.lstrip("-")) > _MAX_DIGITS:
        raise _NotJson(literal, f"an integer of {len(literal.lstrip('-'))} digits is too long")
    return int(literal)


def _no_constant(literal: str) -> NoReturn:
    raise _NotJson(literal, f"{literal} is not JSON")


def _where(text: str, index: int) -> str:
    """``at byte 17 (line 2, column 5)`` for a character index into ``text``."""
    line = text.count("\n", 0, index) + 1
    column = index - (text.rfind("\n", 0, index) + 1) + 1
    return f"at byte {len(text[:index].encode())} (line {line}, column {column})"


def decode_utf8(raw: bytes) -> str:
    """The text of a body, or a 422 naming the first byte that is not UTF-8 and where it is."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        valid = raw[: error.start].decode("utf-8")
        line = valid.count("\n") + 1
        column = len(valid) - (valid.rfind("\n") + 1) + 1
        raise invalid_body(
            f"not UTF-8: byte 0x{raw[error.start]:02x} at byte {error.start} "
            f"(line {line}, column {column})"
        ) from None


def _check_depth(text: str) -> None:
    depth = 0
    for token in _STRING_OR_BRACKET.finditer(text):
        bracket = token.group()
        if bracket in "[{":
            depth += 1
            if depth > MAX_JSON_DEPTH:
                where = _where(text, token.start())
                raise invalid_body(f"nested deeper than {MAX_JSON_DEPTH} levels {where}")
        elif bracket in "]}":
            depth -= 1


def _locate(text: str, literal: str) -> int:
    """Index of the first ``literal`` outside strings (it is there: the parser just read it)."""
    pattern = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|' + re.escape(literal))
    for token in pattern.finditer(text):
        if not token.group().startswith('"'):
            return token.start()
    return 0


def _surrogate(value: Any) -> tuple[str, str] | None:
    """The JSON pointer and problem of the first string (or key) holding a lone surrogate."""
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        pointer, item = stack.pop()
        texts: list[tuple[str, str]] = []  # (what, text)
        if isinstance(item, str):
            texts.append(("", item))
        elif isinstance(item, dict):
            texts.extend(("a key ", key) for key in item)
            stack.extend(
                (f"{pointer}/{key.replace('~', '~0').replace('/', '~1')}", child)
                for key, child in item.items()
            )
        elif isinstance(item, list):
            stack.extend((f"{pointer}/{index}", child) for index, child in enumerate(item))
        for what, text in texts:
            lone = _SURROGATE.search(text)
            if lone is not None:
                code = ord(lone.group())
                return (
                    pointer,
                    f"{what}holds a lone surrogate (U+{code:04X}) at position {lone.start()}",
                )
    return None


def parse_json(raw: bytes) -> Any:
    """The value of a JSON body, or a 422 (``RequestValidationError``) saying where it breaks."""
    text = decode_utf8(raw)
    _check_depth(text)  # before the parser: it recurses once per level
    try:
        value = json.loads(text, parse_int=_bounded_int, parse_constant=_no_constant)
    except json.JSONDecodeError as error:
        raise invalid_body(f"not JSON: {error.msg} {_where(text, error.pos)}") from None
    except _NotJson as error:
        raise invalid_body(
            f"{error.problem} {_where(text, _locate(text, error.literal))}"
        ) from None
    found = _surrogate(value)
    if found is not None:
        pointer, problem = found
        raise invalid_body(problem, pointer)
    return value


# -- reading -----------------------------------------------------------------------------------


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def is_json_media_type(value: str) -> bool:
    return value == "application/json" or (
        value.startswith("application/") and value.endswith("+json")
    )


def _too_large(size: int | str, limit: int) -> HTTPException:
    return HTTPException(413, f"the body is {size} bytes; allowed: at most {limit} bytes")


class _BoundedRequest(Request):
    """A request whose body is read at most ``limit`` bytes far and whose JSON is strict.

    The body and the parsed JSON are kept where Starlette's ``Request`` keeps them, so FastAPI and
    the handlers read them from here, not from the wire again.
    """

    def __init__(self, scope: Scope, receive: Receive, limit: int) -> None:
        super().__init__(scope, receive)
        self._limit = limit

    async def body(self) -> bytes:
        if not hasattr(self, "_body"):
            declared = self.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > self._limit:
                raise _too_large(declared, self._limit)
            chunks: list[bytes] = []
            size = 0
            async with aclosing(self.stream()) as stream:
                async for chunk in stream:
                    size += len(chunk)
                    if size > self._limit:
                        raise _too_large(f"more than {self._limit}", self._limit)
                    chunks.append(chunk)
            self._body = b"".join(chunks)
        return self._body

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = parse_json(await self.body())
        return self._json


class BodyRoute(APIRoute):
    """The route class of every M1 router: bodies bounded and strict (see the module docstring)."""

    max_body_bytes: ClassVar[int] = MAX_BODY_BYTES

    def body_limit(self, request: Request) -> int:
        """The bound of this request's body: ``max_body_bytes``, unless a subclass reads it from
        the replica's settings (event ingest)."""
        return self.max_body_bytes

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        # A body FastAPI parses, or one the handler reads itself and documents (the token routes).
        reads_body = self.body_field is not None or "requestBody" in (self.openapi_extra or {})

        async def bounded(request: Request) -> Response:
            if not reads_body or request.method not in _BODY_METHODS:
                return await handler(request)
            checked = _BoundedRequest(request.scope, request.receive, self.body_limit(request))
            if await checked.body() and is_json_media_type(media_type(checked)):
                await checked.json()  # a 422 here, before FastAPI would turn it into a 400
            return await handler(checked)

        return bounded


def body_route(max_body_bytes: int) -> type[BodyRoute]:
    """A :class:`BodyRoute` with another bound, for a router whose bodies are larger."""
    return type(f"BodyRoute{max_body_bytes}", (BodyRoute,), {"max_body_bytes": max_body_bytes})
