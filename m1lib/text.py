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
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Final

from pydantic import AfterValidator, Field, StringConstraints
from pydantic_core import PydanticCustomError

from m1lib.errors import InputError

__all__ = [
    "ACTOR_MAX",
    "JTI_MAX",
    "NAME_CHECK",
    "NAME_PATTERN",
    "NAME_RULE",
    "PROSE_CHECK",
    "PROSE_PATTERN",
    "PROSE_RULE",
    "REASON_MAX",
    "SUBJECT_MAX",
    "TOOL_MAX",
    "UNSTORABLE_IN_NAME",
    "JtiText",
    "ReasonText",
    "SubjectText",
    "ToolText",
    "check_text",
    "text_problem",
]

JTI_MAX: Final = 64  # revoked_tokens.jti
TOOL_MAX: Final = 128
SUBJECT_MAX: Final = 255
REASON_MAX: Final = 500
ACTOR_MAX: Final = 64

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

# Request-body types of the common fields; the length is checked first, then the characters.
_NAME_SCHEMA: Final = Field(json_schema_extra={"pattern": NAME_PATTERN})
_PROSE_SCHEMA: Final = Field(json_schema_extra={"pattern": PROSE_PATTERN})
JtiText = Annotated[
    str, StringConstraints(min_length=1, max_length=JTI_MAX), NAME_CHECK, _NAME_SCHEMA
]
ToolText = Annotated[
    str, StringConstraints(min_length=1, max_length=TOOL_MAX), NAME_CHECK, _NAME_SCHEMA
]
SubjectText = Annotated[
    str, StringConstraints(min_length=1, max_length=SUBJECT_MAX), NAME_CHECK, _NAME_SCHEMA
]
ReasonText = Annotated[str, StringConstraints(max_length=REASON_MAX), PROSE_CHECK, _PROSE_SCHEMA]
