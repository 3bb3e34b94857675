"""``INSERT ... ON CONFLICT`` for the two databases M1 runs on, written once."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Dialect, Table
from sqlalchemy.dialects import postgresql, sqlite

from m1lib.errors import UsageError

__all__ = ["upsert"]


def upsert(
    dialect: Dialect,
    table: Table,
    values: Mapping[str, Any] | Sequence[Mapping[str, Any]],
    key_columns: Sequence[str],
    update_columns: Sequence[str] = (),
) -> postgresql.Insert | sqlite.Insert:
    """Insert ``values`` (one row or several); a row whose ``key_columns`` exist already gets
    its ``update_columns`` from the new row, or, with none, is left as it is.

    The statement is returned unexecuted, so a caller can add ``.returning(...)``: with do-nothing,
    RETURNING yields only the rows inserted (rowcount is no guide: psycopg reports -1).

    >>> statement = upsert(db.engine.dialect, table, {"id": "r1", "seen": now}, ["id"], ["seen"])
    >>> with db.transaction() as session:
    ...     session.execute(statement)
    """
    rows: Any = dict(values) if isinstance(values, Mapping) else [dict(row) for row in values]
    keys = list(key_columns)
    statement: postgresql.Insert | sqlite.Insert
    if dialect.name == "postgresql":
        statement = postgresql.insert(table).values(rows)
    elif dialect.name == "sqlite":
        statement = sqlite.insert(table).values(rows)
    else:
        raise UsageError(
            f"database dialect {dialect.name!r} is not supported; allowed: postgresql, sqlite"
        )
    if not update_columns:
        return statement.on_conflict_do_nothing(index_elements=keys)
    excluded = statement.excluded
    return statement.on_conflict_do_update(
        index_elements=keys, set_={name: excluded[name] for name in update_columns}
    )
