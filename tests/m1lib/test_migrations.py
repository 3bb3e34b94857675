from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy import inspect

from m1lib.db import migrate
from m1lib.db.models import Base
from m1lib.db.session import Database
from m1lib.errors import DatabaseUnavailable
from m1lib.settings import Settings

EXPECTED = {
    "api_credentials",
    "control_acks",
    "control_commands",
    "replicas",
    "revoked_tokens",
    "revocation_rules",
    "revocation_audit",
    "metric_chunks",
    "health_streaks",
    "incidents",
    "healing_overrides",
    "cost_budget_alerts",
    "cache_ttl_policy",
    "cache_ttl_changes",
}


def _roundtrip(db: Database) -> None:
    assert migrate.current_revision(db) is None
    assert migrate.upgrade(db) == migrate.head_revision()
    assert set(migrate.table_names(db)) >= EXPECTED
    assert migrate.is_current(db)
    assert migrate.upgrade(db) == migrate.head_revision()  # again: nothing to do
    assert migrate.downgrade(db, "base") is None
    assert migrate.table_names(db) == []
    assert migrate.upgrade(db) == migrate.head_revision()


def test_migrations_up_down_up_on_sqlite(make_settings: Callable[..., Settings]) -> None:
    db = Database(make_settings())
    try:
        _roundtrip(db)
    finally:
        db.dispose()


@pytest.mark.postgres
def test_migrations_up_down_up_on_postgresql(
    make_settings: Callable[..., Settings], fresh_pg_url: str
) -> None:
    db = Database(make_settings(database={"url": fresh_pg_url}))
    try:
        _roundtrip(db)
    finally:
        db.dispose()


@pytest.mark.postgres
def test_migrated_schema_matches_the_models(
    make_settings: Callable[..., Settings], fresh_pg_url: str
) -> None:
    """A model change without a migration fails here (autogenerate finds a difference)."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    db = Database(make_settings(database={"url": fresh_pg_url}))
    try:
        migrate.upgrade(db)
        with db.engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
        assert set(inspect(db.engine).get_table_names()) >= EXPECTED
    finally:
        db.dispose()


def test_unreachable_database_raises_database_unavailable_without_password(
    make_settings: Callable[..., Settings],
) -> None:
    url = "postgresql://m1:hunter22@127.0.0.1:1/m1"
    db = Database(make_settings(database={"url": url, "connect_timeout_s": 1}))
    with pytest.raises(DatabaseUnavailable) as raised:
        migrate.current_revision(db)
    assert "hunter22" not in str(raised.value)
    db.dispose()
