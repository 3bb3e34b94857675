"""upsert: one INSERT ... ON CONFLICT that behaves the same on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, select
from sqlalchemy.dialects import mysql

from m1lib.db.session import Database
from m1lib.db.upsert import upsert
from m1lib.errors import UsageError


@pytest.fixture
def pairs(any_db: Database, own_tables: tuple[MetaData, str]) -> Table:
    """Rows keyed by (a, b), with a value that updates and a note that should not."""
    metadata, name = own_tables
    table = Table(
        name,
        metadata,
        Column("a", String(8), primary_key=True),
        Column("b", Integer, primary_key=True),
        Column("value", Integer, nullable=False),
        Column("note", String(16), nullable=False, default=""),
    )
    metadata.create_all(any_db.engine)
    return table


def _run(db: Database, statement: Any) -> list[tuple[Any, ...]]:
    with db.transaction() as session:
        result = session.execute(statement)
        return [tuple(row) for row in result.all()] if result.returns_rows else []


def _rows(db: Database, table: Table) -> list[tuple[Any, ...]]:
    with db.transaction() as session:
        query = select(table).order_by(table.c.a, table.c.b)
        return [tuple(row) for row in session.execute(query).all()]


def _upsert(db: Database, table: Table, values: Any, update: list[str]) -> Any:
    return upsert(db.engine.dialect, table, values, ["a", "b"], update)


def test_inserts_a_new_row(any_db: Database, pairs: Table) -> None:
    _run(any_db, _upsert(any_db, pairs, {"a": "x", "b": 1, "value": 10, "note": "first"}, []))
    assert _rows(any_db, pairs) == [("x", 1, 10, "first")]


def test_updates_only_the_update_columns_on_conflict(any_db: Database, pairs: Table) -> None:
    _run(any_db, _upsert(any_db, pairs, {"a": "x", "b": 1, "value": 10, "note": "first"}, []))
    again = {"a": "x", "b": 1, "value": 11, "note": "second"}
    _run(any_db, _upsert(any_db, pairs, again, ["value"]))
    assert _rows(any_db, pairs) == [("x", 1, 11, "first")]


def test_without_update_columns_a_conflict_changes_nothing_and_returns_no_row(
    any_db: Database, pairs: Table
) -> None:
    first = _upsert(any_db, pairs, {"a": "x", "b": 1, "value": 10, "note": "first"}, [])
    assert _run(any_db, first.returning(pairs.c.value)) == [(10,)]
    again = _upsert(any_db, pairs, {"a": "x", "b": 1, "value": 99, "note": "second"}, [])
    assert _run(any_db, again.returning(pairs.c.value)) == []  # how a caller tells it lost
    assert _rows(any_db, pairs) == [("x", 1, 10, "first")]


def test_several_rows_in_one_statement_insert_and_update_each(
    any_db: Database, pairs: Table
) -> None:
    _run(any_db, _upsert(any_db, pairs, {"a": "x", "b": 1, "value": 10, "note": "old"}, []))
    batch = [
        {"a": "x", "b": 1, "value": 11, "note": "new"},  # exists: value updated, note kept
        {"a": "x", "b": 2, "value": 20, "note": "new"},  # same a, another b: a new row
        {"a": "y", "b": 1, "value": 30, "note": "new"},
    ]
    _run(any_db, _upsert(any_db, pairs, batch, ["value"]))
    assert _rows(any_db, pairs) == [("x", 1, 11, "old"), ("x", 2, 20, "new"), ("y", 1, 30, "new")]


def test_several_rows_without_update_columns_insert_only_the_new_ones(
    any_db: Database, pairs: Table
) -> None:
    _run(any_db, _upsert(any_db, pairs, {"a": "x", "b": 1, "value": 10, "note": "old"}, []))
    batch = [{"a": "x", "b": 1, "value": 11, "note": "new"}, {"a": "y", "b": 1, "value": 30}]
    inserted = _run(any_db, _upsert(any_db, pairs, batch, []).returning(pairs.c.a))
    assert inserted == [("y",)]
    assert _rows(any_db, pairs) == [("x", 1, 10, "old"), ("y", 1, 30, "")]


def test_another_dialect_is_a_usage_error(pairs: Table) -> None:
    with pytest.raises(UsageError, match="'mysql' is not supported; allowed: postgresql, sqlite"):
        upsert(mysql.dialect(), pairs, {"a": "x", "b": 1, "value": 1}, ["a", "b"], ["value"])
