"""SQLAlchemy 2 models of M1's own tables; each table's docstring says who writes and who reads it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: DateTime(timezone=True), dict[str, Any]: JSON}


class Replica(Base):
    """One row per API replica, upserted by its heartbeat; flows and `m1` read who is alive."""

    __tablename__ = "replicas"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    base_url: Mapped[str] = mapped_column(String(512))
    hostname: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime]
    last_seen: Mapped[datetime] = mapped_column(index=True)
    cache_backend: Mapped[str] = mapped_column(String(16))
    revocation_sync_age_s: Mapped[float | None] = mapped_column(Float)
    store_lag_s: Mapped[float | None] = mapped_column(Float)
    rss_bytes: Mapped[int] = mapped_column(BigInteger)
    queue_drops: Mapped[int] = mapped_column(BigInteger, default=0)
    last_command_id: Mapped[int | None] = mapped_column(BigInteger)


class ControlCommand(Base):
    """A versioned command (its id) any process writes; every live replica applies it once."""

    __tablename__ = "control_commands"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    args: Mapped[dict[str, Any]] = mapped_column(default=dict)
    target: Mapped[str | None] = mapped_column(String(128))  # a replica id, or None for all
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime] = mapped_column(index=True)


class ControlAck(Base):
    """A replica's acknowledgement of one command: applied, or failed with the error text."""

    __tablename__ = "control_acks"

    command_id: Mapped[int] = mapped_column(
        ForeignKey("control_commands.id", ondelete="CASCADE"), primary_key=True
    )
    replica_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    ok: Mapped[bool]
    detail: Mapped[str] = mapped_column(Text, default="")
    applied_at: Mapped[datetime]


class ApiCredential(Base):
    """A named API key (only its SHA-256 is stored) with its role; the name is the audit actor."""

    __tablename__ = "api_credentials"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(64))
    revoked_at: Mapped[datetime | None]


Index("ix_control_acks_replica", ControlAck.replica_id, ControlAck.command_id)
