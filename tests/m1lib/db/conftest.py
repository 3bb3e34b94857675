"""A database per test on SQLite and on PostgreSQL, with a table of the test's own."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import MetaData

from m1lib.db.session import Database
from m1lib.settings import Settings


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def any_db(
    request: pytest.FixtureRequest, make_settings: Callable[..., Settings]
) -> Iterator[Database]:
    """The same test on both databases M1 runs on (PostgreSQL: this run's shared database)."""
    database = {"url": request.getfixturevalue("pg_url")} if request.param == "postgresql" else {}
    db = Database(make_settings(database=database))
    yield db
    db.dispose()


@pytest.fixture
def own_tables(any_db: Database) -> Iterator[tuple[MetaData, str]]:
    """A metadata whose tables are created by the test and dropped after; plus a unique name."""
    metadata = MetaData()
    yield metadata, f"t_{uuid.uuid4().hex[:8]}"
    metadata.drop_all(any_db.engine)
