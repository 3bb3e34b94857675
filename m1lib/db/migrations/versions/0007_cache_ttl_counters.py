"""cache TTL counters: each process's cumulative per-tool hit and suspect-hit counts, appended

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 18:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "cache_ttl_counters",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("process", sa.String(length=200), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("tool", sa.String(length=128), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("hits", sa.BigInteger(), nullable=False),
        sa.Column("suspect_hits", sa.BigInteger(), nullable=False),
        sa.Column("refetches", sa.BigInteger(), nullable=False),
        sa.Column("changed", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cache_ttl_counters")),
    )
    with op.batch_alter_table("cache_ttl_counters", schema=None) as batch_op:
        batch_op.create_index("ix_cache_ttl_counters_tool_at", ["tool", "at"], unique=False)
        batch_op.create_index(batch_op.f("ix_cache_ttl_counters_at"), ["at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("cache_ttl_counters", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_cache_ttl_counters_at"))
        batch_op.drop_index("ix_cache_ttl_counters_tool_at")
    op.drop_table("cache_ttl_counters")
