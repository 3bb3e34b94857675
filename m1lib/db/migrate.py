"""Schema migrations as library calls: upgrade, downgrade, where the database stands.

Several replicas may start at once: on PostgreSQL an advisory lock lets one migrate while the others
wait and then find nothing to do.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect, text

from m1lib.db.session import Database

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_LOCK_KEY = 0x4D31_0001  # "M1" + 1: one advisory lock id for M1 migrations


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "the migrations folder has no revision"
    return head


def current_revision(db: Database) -> str | None:
    """The revision the database is at; None when it was never migrated."""
    with db.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def is_current(db: Database) -> bool:
    return current_revision(db) == head_revision()


def upgrade(db: Database, revision: str = "head") -> str | None:
    """Bring the schema to ``revision``; returns the revision now current."""
    return _run(db, lambda config: command.upgrade(config, revision))


def downgrade(db: Database, revision: str) -> str | None:
    return _run(db, lambda config: command.downgrade(config, revision))


def _run(db: Database, step: object) -> str | None:
    with db.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
        step(alembic_config(connection))  # type: ignore[operator]
        return MigrationContext.configure(connection).get_current_revision()


def table_names(db: Database) -> list[str]:
    with db.connect() as connection:
        names = inspect(connection).get_table_names()
    return sorted(name for name in names if name != "alembic_version")
