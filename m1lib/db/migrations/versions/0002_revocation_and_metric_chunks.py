"""revocations, their audit, and persisted metric chunks

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 21:05:46.374968
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "metric_chunks",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("metric", sa.String(length=64), nullable=False),
        sa.Column("resolution", sa.String(length=8), nullable=False),
        sa.Column("replica", sa.String(length=128), nullable=False),
        sa.Column("start_ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("end_ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_metric_chunks")),
    )
    with op.batch_alter_table("metric_chunks", schema=None) as batch_op:
        batch_op.create_index(
            "ix_metric_chunks_lookup", ["metric", "resolution", "start_ts"], unique=False
        )

    op.create_table(
        "revocation_audit",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("jti", sa.String(length=64), nullable=True),
        sa.Column("rule_id", sa.BigInteger(), nullable=True),
        sa.Column("tool_name", sa.String(length=128), nullable=True),
        sa.Column("reason", sa.String(length=500), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_revocation_audit")),
    )
    with op.batch_alter_table("revocation_audit", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_revocation_audit_at"), ["at"], unique=False)
        batch_op.create_index(batch_op.f("ix_revocation_audit_jti"), ["jti"], unique=False)

    op.create_table(
        "revocation_rules",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("tool_name", sa.String(length=128), nullable=True),
        sa.Column("subject", sa.String(length=255), nullable=True),
        sa.Column("issued_before", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_revocation_rules")),
    )
    with op.batch_alter_table("revocation_rules", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_revocation_rules_created_at"), ["created_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_revocation_rules_expires_at"), ["expires_at"], unique=False
        )

    op.create_table(
        "revoked_tokens",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("jti", sa.String(length=64), nullable=False),
        sa.Column("tool_name", sa.String(length=128), nullable=True),
        sa.Column("subject", sa.String(length=255), nullable=True),
        sa.Column("reason", sa.String(length=500), nullable=False),
        sa.Column("revoked_by", sa.String(length=64), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_revoked_tokens")),
        sa.UniqueConstraint("jti", name=op.f("uq_revoked_tokens_jti")),
    )
    with op.batch_alter_table("revoked_tokens", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_revoked_tokens_expires_at"), ["expires_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_revoked_tokens_revoked_at"), ["revoked_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_revoked_tokens_tool_name"), ["tool_name"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("revoked_tokens", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_revoked_tokens_tool_name"))
        batch_op.drop_index(batch_op.f("ix_revoked_tokens_revoked_at"))
        batch_op.drop_index(batch_op.f("ix_revoked_tokens_expires_at"))

    op.drop_table("revoked_tokens")
    with op.batch_alter_table("revocation_rules", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_revocation_rules_expires_at"))
        batch_op.drop_index(batch_op.f("ix_revocation_rules_created_at"))

    op.drop_table("revocation_rules")
    with op.batch_alter_table("revocation_audit", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_revocation_audit_jti"))
        batch_op.drop_index(batch_op.f("ix_revocation_audit_at"))

    op.drop_table("revocation_audit")
    with op.batch_alter_table("metric_chunks", schema=None) as batch_op:
        batch_op.drop_index("ix_metric_chunks_lookup")

    op.drop_table("metric_chunks")
