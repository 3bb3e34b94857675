"""What tasks work on, got one way: the database (and settings) of the flow run's environment.

A flow run is its own process configured by M1_* variables, so a task reads the settings there
and holds its database only for its own run: nothing outlives the task, and a failure leaves no
engine or Redis client open behind it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from m1lib.db.session import Database
from m1lib.revocation import RevocationManager
from m1lib.settings import get_settings


@contextmanager
def database() -> Iterator[Database]:
    """M1's database for the current settings (``db.settings``), disposed at exit."""
    with Database(get_settings()) as db:
        yield db


@contextmanager
def revocation_manager() -> Iterator[RevocationManager]:
    """A manager on :func:`database` without its threads (no first load, no subscriber): a task
    needs no live state, only one transaction; closed at exit."""
    with database() as db:
        manager = RevocationManager(settings=db.settings, db=db)
        try:
            yield manager
        finally:
            manager.close()
