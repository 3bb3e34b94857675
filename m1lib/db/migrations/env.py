"""Alembic environment: runs on the connection M1 hands it (see ``m1lib.db.migrate``)."""

from __future__ import annotations

from alembic import context

from m1lib.db.models import Base
from m1lib.db.types import render_item

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    compare_type=True,
    render_as_batch=connection.dialect.name == "sqlite",
    render_item=render_item,
)
with context.begin_transaction():
    context.run_migrations()
