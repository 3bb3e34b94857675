"""Column types M1's models share; one place decides how a value crosses the database boundary."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import DateTime, Dialect
from sqlalchemy.types import TypeDecorator

from m1lib.errors import UsageError

__all__ = ["UtcDateTime", "render_item"]


class UtcDateTime(TypeDecorator[datetime]):
    """A ``DateTime(timezone=True)`` that only takes aware values and only gives back UTC ones.

    SQLite keeps no offset (it stores the wall time it is given and hands back naive values) and
    psycopg answers in the session's time zone, so every value is written as UTC and read back
    as aware UTC on both. A naive value is refused, as M1's input boundaries refuse it: which
    zone it meant is unknowable, and guessing would move a revocation or a retention cut-off by
    hours. The DDL and Alembic's type comparison see the plain ``DateTime(timezone=True)``.
    """

    impl = DateTime
    cache_ok = True

    def __init__(self) -> None:
        super().__init__(timezone=True)

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
            raise UsageError(f"{value!r} is not an aware datetime; M1 stores only aware values")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:  # SQLite: the UTC wall time written above
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def render_item(kind: str, item: Any, _context: Any) -> str | Literal[False]:
    """Alembic's ``render_item`` hook: a new migration spells these types as the column types
    they create, so it needs no m1lib import and stays valid if the Python types move."""
    if kind == "type" and isinstance(item, UtcDateTime):
        return "sa.DateTime(timezone=True)"
    return False
