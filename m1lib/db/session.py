"""Engines and sessions: one engine per process and URL, errors wrapped at the boundary.

Building an engine opens no connection; ``import m1lib`` starts nothing. A driver error leaves as
an M1 error whose message never names the server: messages reach HTTP clients, and a connection
URL (user, host, port, database) is none of their business. The log names it, password redacted.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from sqlalchemy import Connection, Engine, create_engine, event, exc
from sqlalchemy.orm import Session, sessionmaker

from m1lib.errors import DatabaseRefused, DatabaseUnavailable, M1Error
from m1lib.settings import Settings, redact_url

logger = logging.getLogger("m1.db")
# What the statement's own values broke: sending it again fails again, so it is not an outage.
_REFUSED_DATA = (exc.DataError, exc.IntegrityError)
# The driver errors every way in (transaction, connect, begin) turns into M1 errors.
_DRIVER_ERRORS = (exc.OperationalError, exc.InterfaceError, *_REFUSED_DATA)
_DISPOSE_EVERY_S = 1.0  # an outage fails many calls at once: one disposal serves them all


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

    Every way in (:meth:`transaction`, :meth:`connect`, :meth:`begin`) turns driver errors into
    M1 errors (see :meth:`error_for`), so callers never reach the engine past them. Used as a
    context manager, it disposes its engine at exit:

    >>> with Database(settings) as db, db.transaction() as session:
    ...     session.add(row)
    """

    def __init__(self, settings: Settings, *, url: str | None = None) -> None:
        self.settings = settings
        self.engine = make_engine(settings, url=url)
        self.url_for_logs = redact_url(self.engine.url.render_as_string(hide_password=True))
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._dispose_lock = threading.Lock()
        self._disposed_at = -math.inf
        self.disposals = 0  # pools dropped after failures (the health report, tests)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _traceback: TracebackType | None,
    ) -> None:
        self.dispose()

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session committed on success, rolled back on error."""
        with self._wrapping_errors(), self._sessions.begin() as session:
            yield session

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        """A Core connection for reads and for tools that run their own transaction (Alembic)."""
        with self._wrapping_errors(), self.engine.connect() as connection:
            yield connection

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """A Core connection in a transaction, committed on success, rolled back on error."""
        with self._wrapping_errors(), self.engine.begin() as connection:
            yield connection

    @contextmanager
    def _wrapping_errors(self) -> Iterator[None]:
        """Driver errors raised inside become the M1 errors :meth:`error_for` names."""
        try:
            yield
        except _DRIVER_ERRORS as error:
            if not isinstance(error, _REFUSED_DATA):
                self._dispose_after_failure()
            raise self.error_for(error) from error

    def _dispose_after_failure(self) -> None:
        """Drop every pooled connection after an outage-kind failure, at most once per
        ``_DISPOSE_EVERY_S``: after a database restart or a cut network the pool holds dead
        sockets, and pre-ping would find them one checkout at a time. The next checkout connects
        anew; callers retry with their own backoff (loops, task retries, HTTP Retry-After)."""
        now = time.monotonic()
        with self._dispose_lock:
            if now - self._disposed_at < _DISPOSE_EVERY_S:
                return
            self._disposed_at = now
            self.disposals += 1
        self.engine.dispose()
        logger.info("database %s: connection pool disposed after a failure", self.url_for_logs)

    def error_for(self, error: exc.DBAPIError, *, retry_after_s: int = 2) -> M1Error:
        """The M1 error a driver error becomes, for the caller to raise ``from`` it.

        ``DatabaseRefused`` when the statement's data broke it (a value the column cannot hold, a
        constraint): retrying cannot help. ``DatabaseUnavailable`` for the rest (no connection, a
        timeout, a schema the statement does not fit), with when to retry. The message names the
        driver's error class only; the server it came from goes to the log.
        """
        kind = type(error.orig).__name__ if error.orig is not None else type(error).__name__
        detail = redact_url(str(error.orig if error.orig is not None else error)).strip()
        if isinstance(error, _REFUSED_DATA):
            logger.info("database %s refused a statement: %s", self.url_for_logs, detail)
            return DatabaseRefused(
                f"the database refused a value of this request ({kind}); nothing was changed"
            )
        logger.warning("database %s unavailable: %s", self.url_for_logs, detail)
        return DatabaseUnavailable(
            f"the database is unavailable ({kind}); retry in {retry_after_s} s",
            retry_after_s=retry_after_s,
        )

    def dispose(self) -> None:
        self.engine.dispose()
