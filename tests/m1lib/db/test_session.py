"""Driver errors leave the database layer as M1 errors that name no server and say what they are."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import exc, text

from m1lib.db.session import Database
from m1lib.errors import DatabaseRefused, DatabaseUnavailable, UnavailableError
from m1lib.settings import Settings


@pytest.fixture
def make_db(make_settings: Callable[..., Settings]) -> Iterator[Callable[..., Database]]:
    built: list[Database] = []

    def factory(url: str | None = None) -> Database:
        database = {"url": url, "connect_timeout_s": 1} if url else {}
        db = Database(make_settings(database=database))
        built.append(db)
        return db

    yield factory
    for db in built:
        db.dispose()


def test_unavailable_message_names_no_server_and_says_when_to_retry(
    make_db: Callable[..., Database], caplog: pytest.LogCaptureFixture
) -> None:
    db = make_db("postgresql://m1user:hunter22@127.0.0.1:1/m1secretdb")
    with pytest.raises(DatabaseUnavailable) as raised, db.transaction() as session:
        session.execute(text("SELECT 1"))
    message = str(raised.value)
    for secret in ("m1user", "hunter22", "127.0.0.1", ":1", "m1secretdb", "postgresql"):
        assert secret not in message
    assert message.startswith("the database is unavailable")
    assert f"retry in {raised.value.retry_after_s} s" in message
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "127.0.0.1:1/m1secretdb" in logged  # the operator's log names the server...
    assert "hunter22" not in logged  # ...without the password


@pytest.mark.postgres
def test_nul_in_a_postgresql_statement_is_refused_data_not_an_outage(
    make_db: Callable[..., Database], pg_url: str
) -> None:
    db = make_db(pg_url)
    with pytest.raises(DatabaseRefused) as raised, db.transaction() as session:
        session.execute(text("SELECT CAST(:value AS text)"), {"value": "a\x00b"})
    assert not isinstance(raised.value, UnavailableError)
    assert "127.0.0.1" not in str(raised.value)
    assert "DataError" in str(raised.value)


@pytest.mark.postgres
def test_out_of_range_number_on_postgresql_is_refused_data(
    make_db: Callable[..., Database], pg_url: str
) -> None:
    db = make_db(pg_url)
    with pytest.raises(DatabaseRefused, match="NumericValueOutOfRange"), db.transaction() as s:
        s.execute(text("SELECT CAST(:value AS bigint)"), {"value": 10**23})


def test_broken_constraint_is_refused_data_not_an_outage(
    make_db: Callable[..., Database],
) -> None:
    db = make_db()
    with db.transaction() as session:
        session.execute(text("CREATE TABLE once (id INTEGER PRIMARY KEY)"))
        session.execute(text("INSERT INTO once (id) VALUES (1)"))
    with pytest.raises(DatabaseRefused, match="IntegrityError"), db.transaction() as session:
        session.execute(text("INSERT INTO once (id) VALUES (1)"))


def test_every_way_in_turns_an_outage_into_database_unavailable(
    make_db: Callable[..., Database],
) -> None:
    db = make_db("postgresql://m1user:hunter22@127.0.0.1:1/m1secretdb")
    for way_in in (db.connect, db.begin, db.transaction):
        with pytest.raises(DatabaseUnavailable) as raised, way_in() as handle:
            handle.execute(text("SELECT 1"))
        assert "hunter22" not in str(raised.value)
        assert isinstance(raised.value.__cause__, exc.OperationalError)


def test_begin_commits_on_success_and_rolls_back_on_error(
    make_db: Callable[..., Database],
) -> None:
    db = make_db()
    with db.begin() as connection:
        connection.execute(text("CREATE TABLE kept (id INTEGER PRIMARY KEY)"))
        connection.execute(text("INSERT INTO kept (id) VALUES (1)"))

    def insert_then_fail() -> None:
        with db.begin() as connection:
            connection.execute(text("INSERT INTO kept (id) VALUES (2)"))
            raise RuntimeError("the caller's own failure passes through unchanged")

    with pytest.raises(RuntimeError, match="passes through unchanged"):
        insert_then_fail()
    with db.connect() as connection:
        assert connection.execute(text("SELECT id FROM kept")).scalars().all() == [1]


def test_errors_raised_inside_connect_are_wrapped_too(make_db: Callable[..., Database]) -> None:
    db = make_db()
    with pytest.raises(DatabaseUnavailable), db.connect() as connection:
        connection.execute(text("SELECT * FROM no_such_table"))
    with db.begin() as connection:
        connection.execute(text("CREATE TABLE once (id INTEGER PRIMARY KEY)"))
        connection.execute(text("INSERT INTO once (id) VALUES (1)"))
    with pytest.raises(DatabaseRefused, match="IntegrityError"), db.begin() as connection:
        connection.execute(text("INSERT INTO once (id) VALUES (1)"))


def test_database_as_a_context_manager_disposes_its_engine(
    make_settings: Callable[..., Settings],
) -> None:
    def pooled(db: Database) -> int:
        return db.engine.pool.checkedin()  # type: ignore[attr-defined,no-any-return]

    with Database(make_settings()) as db:
        with db.connect() as connection:
            assert connection.execute(text("SELECT 1")).scalar_one() == 1
        assert pooled(db) == 1
    assert pooled(db) == 0
    failing = Database(make_settings())

    def fail_inside() -> None:
        with failing, failing.connect() as connection:
            connection.execute(text("SELECT 1"))
            raise RuntimeError("disposed all the same")

    with pytest.raises(RuntimeError, match="disposed all the same"):
        fail_inside()
    assert pooled(failing) == 0


@pytest.mark.postgres
def test_an_outage_disposes_the_pool_and_the_next_call_reconnects(
    make_db: Callable[..., Database], pg_url: str
) -> None:
    """Cut the network under pooled connections: the failure drops the pool (once, however many
    calls fail together), and after the cut is restored the next call works without a restart."""
    from sqlalchemy.engine import make_url

    from tests.services import TcpProxy

    url = make_url(pg_url)
    proxy = TcpProxy(int(url.port or 5432))
    proxy.start()
    try:
        db = make_db(url.set(port=proxy.port).render_as_string(hide_password=False))
        with db.connect() as connection:
            assert connection.execute(text("SELECT 1")).scalar() == 1
        pool = db.engine.pool
        assert pool.checkedin() == 1  # type: ignore[attr-defined]  # QueuePool's count
        proxy.cut()
        for _ in range(3):
            with pytest.raises(DatabaseUnavailable), db.connect() as connection:
                connection.execute(text("SELECT 1"))
        assert db.disposals == 1
        assert db.engine.pool is not pool  # the dead connections went with the old pool
        proxy.restore()
        with db.connect() as connection:
            assert connection.execute(text("SELECT 1")).scalar() == 1
    finally:
        proxy.cut()


def test_refused_data_keeps_the_pool(make_db: Callable[..., Database]) -> None:
    db = make_db()
    with db.begin() as connection:
        connection.execute(text("CREATE TABLE t (x INTEGER NOT NULL)"))
    pool = db.engine.pool
    with pytest.raises(DatabaseRefused), db.begin() as connection:
        connection.execute(text("INSERT INTO t (x) VALUES (NULL)"))
    assert db.disposals == 0
    assert db.engine.pool is pool
