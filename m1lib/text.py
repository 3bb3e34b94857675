"""Text a caller hands M1, checked once at the boundary before it can reach a database or a log.

PostgreSQL refuses a NUL in text (and SQLite would silently store it), a lone surrogate cannot be
encoded as UTF-8 at all, and control characters in names end up in logs and audits. So every
piece of caller text is one of two shapes, each with a length bound taken from its column:

- a *name* (jti, subject, tool, actor, replica id, command name): no control character at all;
- *prose* (a reason, a message): tabs and line breaks allowed, no other control character.

Neither may hold a surrogate code point. :func:`check_text` raises :class:`InputError` naming the
field; :data:`NAME_CHECK` and :data:`PROSE_CHECK` are the same rules as pydantic validators for
request bodies (``JtiText`` and friends bundle them with the column's length), whose 422 names the
field the same way. The limits are the columns' (``m1lib/db/models.py``).

A free-form JSON value a caller hands M1 (a control command's ``args``) follows the same rules at
every depth: its keys are names, its strings prose; its numbers are finite and its integers fit in
64 bits; it is nested at most :data:`JSON_MAX_DEPTH` deep and serialises to at most
:data:`JSON_MAX_BYTES`. :func:`check_json` raises ``InputError`` naming the member
(``args.targets[2]``); :data:`JSON_CHECK` is the pydantic validator, whose 422 names it as a JSON
pointer (``/args/targets/2``).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any, Final

from pydantic import AfterValidator, GetJsonSchemaHandler, StringConstraints
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, PydanticCustomError

from m1lib.errors import InputError

__all__ = [
    "ACTOR_MAX",
    "COMMAND_NAME_MAX",
    "JSON_CHECK",
    "JSON_MAX_BYTES",
    "JSON_MAX_DEPTH",
    "JSON_RULE",
    "JTI_MAX",
    "NAME_CHECK",
    "NAME_PATTERN",
    "NAME_RULE",
    "NAME_SCHEMA",
    "PROSE_CHECK",
    "PROSE_PATTERN",
    "PROSE_RULE",
    "PROSE_SCHEMA",
    "REASON_MAX",
    "REPLICA_ID_MAX",
    "SUBJECT_MAX",
    "TOOL_MAX",
    "UNSTORABLE_IN_NAME",
    "CommandNameText",
    "JtiText",
    "ReasonText",
    "ReplicaIdText",
    "SchemaPattern",
    "SubjectText",
    "ToolText",
    "check_json",
    "check_text",
    "json_problem",
    "text_problem",
]

JTI_MAX: Final = 64  # revoked_tokens.jti
TOOL_MAX: Final = 128
SUBJECT_MAX: Final = 255
REASON_MAX: Final = 500
ACTOR_MAX: Final = 64
COMMAND_NAME_MAX: Final = 64  # control_commands.name
REPLICA_ID_MAX: Final = 128  # replicas.id, control_commands.target

NAME_RULE: Final = "text without control characters"
PROSE_RULE: Final = "text without control characters other than tab and line breaks"

# C0 and C1 controls and DEL, and surrogates; prose keeps \t \n \r.
UNSTORABLE_IN_NAME: Final = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_BAD_IN_PROSE: Final = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")


def _describe(char: str) -> str:
    code = ord(char)
    if char == "\x00":
        return "a NUL character"
    if 0xD800 <= code <= 0xDFFF:
        return f"a lone surrogate (U+{code:04X})"
    return f"a control character (U+{code:04X})"


def text_problem(value: str, *, prose: bool = False) -> str | None:
    """What is wrong with the characters of ``value`` (None when nothing is); no length check."""
    bad = (_BAD_IN_PROSE if prose else UNSTORABLE_IN_NAME).search(value)
    if bad is None:
        return None
    return f"holds {_describe(bad.group())} at position {bad.start()}"


def check_text(
    path: str,
    value: Any,
    max_length: int,
    *,
    required: bool = False,
    optional: bool = False,
    prose: bool = False,
) -> None:
    """Raise InputError unless ``value`` is text of the allowed shape and length.

    ``required``: not empty or blank when given; ``optional``: None is allowed; ``prose``: tabs
    and line breaks are allowed (a reason), otherwise no control character is (a name).
    """
    low = 1 if required else 0
    allowed = [f"{low}-{max_length} characters", PROSE_RULE if prose else NAME_RULE]
    if value is None:
        if optional:
            return
        raise InputError(path, "missing", allowed)
    if not isinstance(value, str):
        raise InputError(path, f"{type(value).__name__} is not text", allowed)
    if len(value) > max_length or (required and not value.strip()):
        shape = f"{len(value)} characters" if not value or len(value) > max_length else "blank"
        raise InputError(path, f"{shape} is out of range", allowed)
    problem = text_problem(value, prose=prose)
    if problem is not None:
        raise InputError(path, problem, allowed)


def _validator(prose: bool) -> AfterValidator:
    rule = PROSE_RULE if prose else NAME_RULE

    def check(value: str) -> str:
        problem = text_problem(value, prose=prose)
        if problem is None and not prose and value and not value.strip():
            problem = "is blank"
        if problem is not None:
            raise PydanticCustomError("text", problem, {"expected": rule})
        return value

    return AfterValidator(check)


# The same rules as JSON-schema patterns, so a client generated from OpenAPI checks them too.
NAME_PATTERN: Final = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$"
PROSE_PATTERN: Final = "^[^\\u0000-\\u0008\\u000b\\u000c\\u000e-\\u001f\\u007f-\\u009f]*$"


NAME_CHECK: Final = _validator(prose=False)
"""For a name of another length: ``Annotated[str, StringConstraints(max_length=64), NAME_CHECK]``."""
PROSE_CHECK: Final = _validator(prose=True)


@dataclass(frozen=True)
class SchemaPattern:
    """Adds ``pattern`` to a string's JSON schema without being a ``Field``, so it survives where
    FastAPI replaces a type's ``Field`` by its own ``Path(...)`` or ``Query(...)``."""

    pattern: str

    def __get_pydantic_json_schema__(
        self, core: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        schema = handler(core)
        schema["pattern"] = self.pattern
        return schema


NAME_SCHEMA: Final = SchemaPattern(NAME_PATTERN)
PROSE_SCHEMA: Final = SchemaPattern(PROSE_PATTERN)

# Request types of the common fields (bodies, paths, queries); the length is checked first, then
# the characters.
JtiText = Annotated[
    str, StringConstraints(min_length=1, max_length=JTI_MAX), NAME_CHECK, NAME_SCHEMA
]
ToolText = Annotated[
    str, StringConstraints(min_length=1, max_length=TOOL_MAX), NAME_CHECK, NAME_SCHEMA
]
SubjectText = Annotated[
    str, StringConstraints(min_length=1, max_length=SUBJECT_MAX), NAME_CHECK, NAME_SCHEMA
]
ReasonText = Annotated[str, StringConstraints(max_length=REASON_MAX), PROSE_CHECK, PROSE_SCHEMA]
CommandNameText = Annotated[
    str, StringConstraints(min_length=1, max_length=COMMAND_NAME_MAX), NAME_CHECK, NAME_SCHEMA
]
ReplicaIdText = Annotated[
    str, StringConstraints(min_length=1, max_length=REPLICA_ID_MAX), NAME_CHECK, NAME_SCHEMA
]


# -- free-form JSON values -----------------------------------------------------------------------

JSON_MAX_BYTES: Final = 64 * 1024  # serialised (compact, UTF-8): a command's args, not a payload
JSON_MAX_DEPTH: Final = 16  # nested objects and arrays, the value itself being depth 1
JSON_RULE: Final = (
    f"JSON of at most {JSON_MAX_BYTES} bytes and {JSON_MAX_DEPTH} levels; keys: {NAME_RULE}; "
    f"strings: {PROSE_RULE}; finite numbers, integers within 64 bits"
)
# A signed 64-bit integer: what JSON's consumers (and databases) all read.
_INT_MIN: Final = -(2**63)
_INT_MAX: Final = 2**63 - 1

Pointer = tuple[str | int, ...]


def json_problem(value: Any) -> tuple[Pointer, str] | None:
    """Where ``value`` breaks the JSON rule and how (None when it does not).

    Walks iteratively, so no nesting can exhaust the stack, and stops at the first problem or once
    the text seen so far is already too large; the exact size is measured only once every member
    is known to be sound (so ``json.dumps`` cannot fail on it).
    """
    stack: list[tuple[Pointer, Any]] = [((), value)]
    budget = JSON_MAX_BYTES  # a lower bound of the size so far: stop early on a huge value
    while stack:
        at, item = stack.pop()
        if len(at) >= JSON_MAX_DEPTH and isinstance(item, dict | list):
            return at, f"nested deeper than {JSON_MAX_DEPTH} levels"
        problem = _scalar_problem(item)
        if problem is not None:
            return at, problem
        if isinstance(item, str):
            budget -= len(item) + 2
        elif isinstance(item, dict):
            for key, child in item.items():
                if not isinstance(key, str):
                    return at, f"key {key!r} is not text"
                problem = text_problem(key)
                if problem is not None:  # the object is named: the key is what cannot be shown
                    return at, f"a key {problem}"
                budget -= len(key) + 4
                stack.append(((*at, key), child))
        elif isinstance(item, list):
            budget -= len(item) + 2
            stack.extend(((*at, index), child) for index, child in enumerate(item))
        if budget < 0:
            return (), f"larger than {JSON_MAX_BYTES} bytes as JSON"
    size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())
    if size > JSON_MAX_BYTES:
        return (), f"{size} bytes as JSON is larger than {JSON_MAX_BYTES}"
    return None


def _scalar_problem(item: Any) -> str | None:
    if item is None or isinstance(item, bool | dict | list):
        return None
    if isinstance(item, str):
        return text_problem(item, prose=True)
    if isinstance(item, int):
        return None if _INT_MIN <= item <= _INT_MAX else "an integer outside the 64-bit range"
    if isinstance(item, float):
        return None if math.isfinite(item) else f"{item} is not a finite number"
    return f"{type(item).__name__} is not a JSON value"


def _python_path(at: Pointer) -> Iterator[str]:
    for part in at:
        yield f"[{part}]" if isinstance(part, int) else f".{part}"


def check_json(path: str, value: Any) -> None:
    """Raise InputError naming the member (``args.targets[2]``) unless ``value`` follows the JSON
    rule; the Python form of :data:`JSON_CHECK`."""
    found = json_problem(value)
    if found is not None:
        at, problem = found
        raise InputError(path + "".join(_python_path(at)), problem, [JSON_RULE])


def _json_pointer(at: Pointer) -> str:
    return "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in at)


def _check_json_value(value: Any) -> Any:
    found = json_problem(value)
    if found is not None:
        at, problem = found
        # ``at`` extends the field's own location in the 422 (m1lib/api/problems.py)
        raise PydanticCustomError("json", problem, {"expected": JSON_RULE, "at": _json_pointer(at)})
    return value


JSON_CHECK: Final = AfterValidator(_check_json_value)
"""For a free-form JSON field: ``Annotated[dict[str, Any], JSON_CHECK]``."""
