"""cache TTL policy: per-tool TTLs every cached_call follows, and the log of applied changes

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 16:45:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "cache_ttl_policy",
        sa.Column("tool", sa.String(length=128), nullable=False),
        sa.Column("ttl_s", sa.Float(), nullable=False),
        sa.Column("staleness_budget_s", sa.Float(), nullable=False),
        sa.Column("peak_ttl_s", sa.Float(), nullable=True),
        sa.Column("offpeak_ttl_s", sa.Float(), nullable=True),
        sa.Column("peak_start_hour", sa.Integer(), nullable=True),
        sa.Column("peak_end_hour", sa.Integer(), nullable=True),
        sa.Column("stale_while_revalidate_s", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(length=128), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("tool", name=op.f("pk_cache_ttl_policy")),
    )
    op.create_table(
        "cache_ttl_changes",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("tool", sa.String(length=128), nullable=False),
        sa.Column("before", sa.JSON(), nullable=True),
        sa.Column("after", sa.JSON(), nullable=True),
        sa.Column("figures_before", sa.JSON(), nullable=True),
        sa.Column("figures_after", sa.JSON(), nullable=True),
        sa.Column("applied_by", sa.String(length=128), nullable=False),
        sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reverted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reason", sa.String(length=500), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cache_ttl_changes")),
    )
    with op.batch_alter_table("cache_ttl_changes", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_cache_ttl_changes_tool"), ["tool"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_cache_ttl_changes_applied_at"), ["applied_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("cache_ttl_changes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_cache_ttl_changes_applied_at"))
        batch_op.drop_index(batch_op.f("ix_cache_ttl_changes_tool"))
    op.drop_table("cache_ttl_changes")
    op.drop_table("cache_ttl_policy")
