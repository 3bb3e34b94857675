"""UtcDateTime: aware UTC in and out on both databases, naive values refused, nothing lost."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import Column, DateTime, Integer, MetaData, Table, exc, insert, select, text

from m1lib.db.models import Base
from m1lib.db.session import Database
from m1lib.db.types import UtcDateTime, render_item
from m1lib.errors import UsageError
from m1lib.settings import Settings

MOMENT = datetime(2026, 12, 3, 7, 29, 5, 123456, tzinfo=UTC)


@pytest.fixture
def stamps(any_db: Database, own_tables: tuple[MetaData, str]) -> Table:
    metadata, name = own_tables
    table = _stamps(metadata, name)
    metadata.create_all(any_db.engine)
    return table


def _stamps(metadata: MetaData, name: str) -> Table:
    return Table(
        name,
        metadata,
        Column("id", Integer, primary_key=True),
        Column("at", UtcDateTime(), nullable=True),
    )


def _write_and_read(db: Database, table: Table, value: datetime | None) -> datetime | None:
    with db.transaction() as session:
        session.execute(insert(table).values(id=1, at=value))
    with db.transaction() as session:
        read: datetime | None = session.execute(select(table.c.at)).scalar_one()
    return read


def test_aware_utc_comes_back_equal_in_utc_with_its_microseconds(
    any_db: Database, stamps: Table
) -> None:
    read = _write_and_read(any_db, stamps, MOMENT)
    assert read == MOMENT
    assert read is not None
    assert read.tzinfo is UTC
    assert read.microsecond == 123456


def test_a_non_utc_offset_is_stored_as_the_same_instant_and_read_in_utc(
    any_db: Database, stamps: Table
) -> None:
    india = timezone(timedelta(hours=5, minutes=30))
    read = _write_and_read(any_db, stamps, MOMENT.astimezone(india))
    assert read == MOMENT
    assert read is not None
    assert read.utcoffset() == timedelta(0)
    assert (read.hour, read.minute, read.microsecond) == (7, 29, 123456)


def test_none_stays_none(any_db: Database, stamps: Table) -> None:
    assert _write_and_read(any_db, stamps, None) is None


def test_a_naive_value_is_refused_and_nothing_is_written(any_db: Database, stamps: Table) -> None:
    with pytest.raises(exc.StatementError) as raised, any_db.transaction() as session:
        session.execute(insert(stamps).values(id=1, at=MOMENT.replace(tzinfo=None)))
    assert isinstance(raised.value.orig, UsageError)
    assert "not an aware datetime" in str(raised.value.orig)
    with any_db.transaction() as session:
        assert session.execute(select(stamps)).all() == []


def test_a_naive_value_in_a_comparison_is_refused(any_db: Database, stamps: Table) -> None:
    with pytest.raises(exc.StatementError) as raised, any_db.transaction() as session:
        session.execute(select(stamps).where(stamps.c.at < datetime(2026, 1, 1)))
    assert isinstance(raised.value.orig, UsageError)


def test_comparisons_bind_in_utc_so_an_offset_does_not_move_the_cut(
    any_db: Database, stamps: Table
) -> None:
    """SQLite compares text: a bound value must be the same UTC wall time the column holds."""
    with any_db.transaction() as session:
        session.execute(insert(stamps).values(id=1, at=MOMENT))
    just_after = (MOMENT + timedelta(microseconds=1)).astimezone(timezone(timedelta(hours=-8)))
    just_before = (MOMENT - timedelta(microseconds=1)).astimezone(timezone(timedelta(hours=9)))
    with any_db.transaction() as session:
        assert session.execute(select(stamps.c.id).where(stamps.c.at < just_after)).all() == [(1,)]
        assert session.execute(select(stamps.c.id).where(stamps.c.at < just_before)).all() == []


def test_a_value_stored_without_an_offset_on_sqlite_reads_as_utc(
    make_settings: Callable[..., Settings],
) -> None:
    """Rows written before this type (the same UTC wall time, no offset) read as aware UTC."""
    db = Database(make_settings())
    metadata = MetaData()
    table = Table(
        "legacy", metadata, Column("id", Integer, primary_key=True), Column("at", UtcDateTime())
    )
    try:
        metadata.create_all(db.engine)
        with db.transaction() as session:
            session.execute(
                text("INSERT INTO legacy (id, at) VALUES (1, '2026-12-03 07:29:05.123456')")
            )
        with db.transaction() as session:
            assert session.execute(select(table.c.at)).scalar_one() == MOMENT
    finally:
        db.dispose()


@pytest.mark.postgres
def test_postgresql_answers_in_utc_whatever_the_session_zone(
    make_settings: Callable[..., Settings], pg_url: str
) -> None:
    db = Database(make_settings(database={"url": pg_url}))
    metadata = MetaData()
    table = _stamps(metadata, f"t_{uuid.uuid4().hex[:8]}")
    try:
        metadata.create_all(db.engine)
        with db.transaction() as session:
            session.execute(insert(table).values(id=1, at=MOMENT))
        with db.transaction() as session:
            session.execute(text("SET LOCAL TIME ZONE 'Asia/Kolkata'"))
            raw = session.execute(text(f"SELECT at FROM {table.name}")).scalar_one()
            typed = session.execute(select(table.c.at)).scalar_one()
    finally:
        metadata.drop_all(db.engine)
        db.dispose()
    assert raw.utcoffset() == timedelta(hours=5, minutes=30)  # what psycopg alone hands back
    assert typed == MOMENT
    assert typed.tzinfo is UTC


def test_every_timestamp_column_of_the_models_is_utc_datetime() -> None:
    """A column declared with a plain DateTime would bring back the naive values of SQLite."""
    timestamps = [
        f"{table.name}.{column.name}"
        for table in Base.metadata.tables.values()
        for column in table.columns
        if isinstance(column.type, DateTime | UtcDateTime)
    ]
    plain = [
        f"{table.name}.{column.name}"
        for table in Base.metadata.tables.values()
        for column in table.columns
        if isinstance(column.type, DateTime)
    ]
    assert len(timestamps) >= 15
    assert plain == []


def test_the_ddl_is_a_plain_timestamp_with_time_zone() -> None:
    from sqlalchemy.dialects import postgresql

    assert UtcDateTime().compile(dialect=postgresql.dialect()) == "TIMESTAMP WITH TIME ZONE"


def test_a_new_migration_spells_it_as_the_plain_column_type() -> None:
    """Autogenerate against an empty database renders every table; none may import m1lib."""
    from alembic.autogenerate import produce_migrations, render_python_code
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy import create_engine

    engine = create_engine("sqlite://")
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection, opts={"compare_type": True, "render_item": render_item}
            )
            script = produce_migrations(context, Base.metadata)
    finally:
        engine.dispose()
    code = render_python_code(script.upgrade_ops, render_item=render_item)
    assert "sa.Column('started_at', sa.DateTime(timezone=True), nullable=False)" in code
    assert "UtcDateTime" not in code
    assert "m1lib" not in code
