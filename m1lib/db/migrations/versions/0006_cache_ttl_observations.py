"""cache TTL observations: each process's TTL optimiser's per-tool recommendation

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 17:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "cache_ttl_observations",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("process", sa.String(length=200), nullable=False),
        sa.Column("tool", sa.String(length=128), nullable=False),
        sa.Column("ttl_s", sa.Float(), nullable=False),
        sa.Column("reason", sa.String(length=200), nullable=False),
        sa.Column("requests_per_h", sa.Float(), nullable=False),
        sa.Column("change_rate_per_h", sa.Float(), nullable=True),
        sa.Column("expected_spend_usd_per_h", sa.Float(), nullable=True),
        sa.Column("expected_stale_per_h", sa.Float(), nullable=True),
        sa.Column("baseline_spend_usd_per_h", sa.Float(), nullable=True),
        sa.Column("baseline_stale_per_h", sa.Float(), nullable=True),
        sa.Column("tracked_keys", sa.Integer(), nullable=False),
        sa.Column("requests_by_hour", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cache_ttl_observations")),
    )
    with op.batch_alter_table("cache_ttl_observations", schema=None) as batch_op:
        batch_op.create_index(
            "ix_cache_ttl_observations_process_tool", ["process", "tool"], unique=True
        )
        batch_op.create_index(
            batch_op.f("ix_cache_ttl_observations_updated_at"), ["updated_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("cache_ttl_observations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_cache_ttl_observations_updated_at"))
        batch_op.drop_index("ix_cache_ttl_observations_process_tool")
    op.drop_table("cache_ttl_observations")
