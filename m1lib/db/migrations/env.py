"""Alembic environment: runs on the connection M1 hands it (see ``m1lib.db.migrate``)."""

from __future__ import annotations

from typing import Any, Literal

from alembic import context

from m1lib.db.models import Base
from m1lib.db.types import UtcDateTime


def _render_item(kind: str, item: Any, _context: Any) -> str | Literal[False]:
    """A new migration spells ``UtcDateTime`` as the column type it creates, so it needs no m1lib
    import and stays valid if the Python type moves."""
    if kind == "type" and isinstance(item, UtcDateTime):
        return "sa.DateTime(timezone=True)"
    return False


connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    compare_type=True,
    render_as_batch=connection.dialect.name == "sqlite",
    render_item=_render_item,
)
with context.begin_transaction():
    context.run_migrations()
