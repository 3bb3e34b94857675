"""Engines and sessions: one engine per process and URL, errors wrapped at the boundary.

Building an engine opens no connection; ``import m1lib`` starts nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, exc
from sqlalchemy.orm import Session, sessionmaker

from m1lib.errors import DatabaseUnavailable
from m1lib.settings import Settings, redact_url


def normalize_url(url: str) -> str:
    """``postgresql://`` and ``postgres://`` mean psycopg 3, the driver M1 ships."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def make_engine(settings: Settings, *, url: str | None = None) -> Engine:
    """An engine with pre-ping; SQLite gets WAL and a busy timeout so flows and the API can share it."""
    target = normalize_url(url or settings.database_url)
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if target.startswith("sqlite"):
        path = target.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"timeout": 15, "check_same_thread": False}
    else:
        kwargs["pool_size"] = settings.database.pool_size
        kwargs["max_overflow"] = settings.database.pool_size
        kwargs["connect_args"] = {
            "connect_timeout": max(1, round(settings.database.connect_timeout_s))
        }
    engine = create_engine(target, **kwargs)
    if target.startswith("sqlite"):
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=15000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


class Database:
    """The process's handle on M1's database: an engine and short transactions that name failures.

    >>> db = Database(settings)
    >>> with db.transaction() as session:
    ...     session.add(row)
    """

    def __init__(self, settings: Settings, *, url: str | None = None) -> None:
        self.settings = settings
        self.engine = make_engine(settings, url=url)
        self.url_for_messages = redact_url(self.engine.url.render_as_string(hide_password=True))
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session committed on success, rolled back on error; driver errors become M1 errors."""
        try:
            with self._sessions.begin() as session:
                yield session
        except (exc.OperationalError, exc.InterfaceError) as error:
            raise DatabaseUnavailable(
                f"database {self.url_for_messages} unavailable: {type(error.orig).__name__}",
                retry_after_s=2,
            ) from error

    def dispose(self) -> None:
        self.engine.dispose()
