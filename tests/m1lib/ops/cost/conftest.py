from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from m1lib.db.migrate import upgrade
from m1lib.db.session import Database
from m1lib.settings import Settings


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


@pytest.fixture
def db(settings: Settings) -> Iterator[Database]:
    """A migrated SQLite database of this test's own."""
    database = Database(settings)
    upgrade(database)
    yield database
    database.dispose()
