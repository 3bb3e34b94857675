"""replicas, control channel and API credentials

Revision ID: 0001
Revises: (none: the first revision)
Create Date: 2026-11-25 20:47:02.706035
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "api_credentials",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_api_credentials")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_api_credentials_key_hash")),
    )
    op.create_table(
        "control_commands",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("args", sa.JSON(), nullable=False),
        sa.Column("target", sa.String(length=128), nullable=True),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_control_commands")),
    )
    with op.batch_alter_table("control_commands", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_control_commands_expires_at"), ["expires_at"], unique=False
        )

    op.create_table(
        "replicas",
        sa.Column("id", sa.String(length=128), nullable=False),
        sa.Column("base_url", sa.String(length=512), nullable=False),
        sa.Column("hostname", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("cache_backend", sa.String(length=16), nullable=False),
        sa.Column("revocation_sync_age_s", sa.Float(), nullable=True),
        sa.Column("store_lag_s", sa.Float(), nullable=True),
        sa.Column("rss_bytes", sa.BigInteger(), nullable=False),
        sa.Column("queue_drops", sa.BigInteger(), nullable=False),
        sa.Column("last_command_id", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_replicas")),
    )
    with op.batch_alter_table("replicas", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_replicas_last_seen"), ["last_seen"], unique=False)

    op.create_table(
        "control_acks",
        sa.Column(
            "command_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("replica_id", sa.String(length=128), nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["command_id"],
            ["control_commands.id"],
            name=op.f("fk_control_acks_command_id_control_commands"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("command_id", "replica_id", name=op.f("pk_control_acks")),
    )
    with op.batch_alter_table("control_acks", schema=None) as batch_op:
        batch_op.create_index("ix_control_acks_replica", ["replica_id", "command_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("control_acks", schema=None) as batch_op:
        batch_op.drop_index("ix_control_acks_replica")

    op.drop_table("control_acks")
    with op.batch_alter_table("replicas", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_replicas_last_seen"))

    op.drop_table("replicas")
    with op.batch_alter_table("control_commands", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_control_commands_expires_at"))

    op.drop_table("control_commands")
    op.drop_table("api_credentials")
