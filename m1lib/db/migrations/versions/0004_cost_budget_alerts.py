"""cost budget alerts: one row per budget alert raised (period kind, period start, level)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03 16:45:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "cost_budget_alerts",
        sa.Column("period_kind", sa.String(length=8), nullable=False),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("level", sa.String(length=8), nullable=False),
        sa.Column("raised_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("spent_micros", sa.BigInteger(), nullable=False),
        sa.Column("budget_micros", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "period_kind", "period_start", "level", name=op.f("pk_cost_budget_alerts")
        ),
    )


def downgrade() -> None:
    op.drop_table("cost_budget_alerts")
