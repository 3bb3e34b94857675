"""SQLAlchemy 2 models of M1's own tables; each table's docstring says who writes and who reads it."""

from __future__ import annotations

import builtins
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from m1lib.db.types import UtcDateTime

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    # Every timestamp column is UtcDateTime: aware UTC in and out, on SQLite as on PostgreSQL.
    type_annotation_map = {datetime: UtcDateTime(), dict[str, Any]: JSON}


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


class RevokedToken(Base):
    """A revoked jti; the database is the truth every replica's in-memory set is rebuilt from.

    ``id`` orders rows for resync cursors, but ids are not commit order: readers re-read an
    overlap window behind their cursor.
    """

    __tablename__ = "revoked_tokens"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    jti: Mapped[str] = mapped_column(String(64), unique=True)
    tool_name: Mapped[str | None] = mapped_column(String(128), index=True)
    subject: Mapped[str | None] = mapped_column(String(255))
    reason: Mapped[str] = mapped_column(String(500))
    revoked_by: Mapped[str] = mapped_column(String(64))
    revoked_at: Mapped[datetime] = mapped_column(index=True)
    expires_at: Mapped[datetime] = mapped_column(index=True)


class RevocationRule(Base):
    """A not-before rule: tokens for this tool and/or subject issued before a time are denied."""

    __tablename__ = "revocation_rules"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    tool_name: Mapped[str | None] = mapped_column(String(128))
    subject: Mapped[str | None] = mapped_column(String(255))
    issued_before: Mapped[datetime]
    reason: Mapped[str] = mapped_column(String(500))
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(index=True)
    expires_at: Mapped[datetime] = mapped_column(index=True)


class RevocationAudit(Base):
    """Every revocation action, including repeated and purging ones; written in the same transaction."""

    __tablename__ = "revocation_audit"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    at: Mapped[datetime] = mapped_column(index=True)
    action: Mapped[str] = mapped_column(String(32))  # revoke, revoke_repeat, revoke_all, purge, ...
    actor: Mapped[str] = mapped_column(String(64))
    jti: Mapped[str | None] = mapped_column(String(64), index=True)
    rule_id: Mapped[int | None] = mapped_column(BigInteger)
    tool_name: Mapped[str | None] = mapped_column(String(128))
    reason: Mapped[str] = mapped_column(String(500), default="")
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)


class MetricChunk(Base):
    """A closed, compressed chunk of one metric's events or rollups, so a restart rebuilds history."""

    __tablename__ = "metric_chunks"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    metric: Mapped[str] = mapped_column(String(64))
    resolution: Mapped[str] = mapped_column(String(8))  # raw, 1m, 1h
    replica: Mapped[str] = mapped_column(String(128))
    start_ts: Mapped[datetime]
    end_ts: Mapped[datetime]
    points: Mapped[int] = mapped_column(BigInteger)
    bytes: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime]
    payload: Mapped[builtins.bytes] = mapped_column(LargeBinary)  # `bytes` is a column here


Index("ix_metric_chunks_lookup", MetricChunk.metric, MetricChunk.resolution, MetricChunk.start_ts)


class HealthStreak(Base):
    """One row per component: its run of consecutive failing checks and the heals in that run.

    Written by the health flow (m1lib.ops.streaks) under a row lock, so two runs never count one
    failure twice; read by the flow, ``m1 healing status`` and housekeeping.
    """

    __tablename__ = "health_streaks"

    component: Mapped[str] = mapped_column(String(64), primary_key=True)
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)
    last_status: Mapped[str | None] = mapped_column(String(16))
    last_checked_at: Mapped[datetime | None]
    streak_started_at: Mapped[datetime | None]
    heals_in_streak: Mapped[int] = mapped_column(Integer, default=0)
    last_heal_at: Mapped[datetime | None]
    escalated_at: Mapped[datetime | None]  # this streak escalated already: no second escalation
    updated_at: Mapped[datetime]


class Incident(Base):
    """A component's failure streak that reached the healing threshold, until a check passes.

    Opened and resolved by the health flow, actions appended by it and the self-heal flow; read by
    ``GET /api/m1/incidents`` and ``m1 incidents``. ``actions`` is a list of
    ``{action, outcome, at, detail}``; ``last_check`` the failing checks' health+json entries.
    """

    __tablename__ = "incidents"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    component: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(32))
    trigger: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))  # open, escalated, resolved
    started_at: Mapped[datetime] = mapped_column(index=True)
    resolved_at: Mapped[datetime | None]
    escalated_at: Mapped[datetime | None]
    suppressed_by: Mapped[str | None] = mapped_column(String(128))
    runbook: Mapped[str] = mapped_column(String(255))
    actions: Mapped[list[Any]] = mapped_column(JSON, default=list)
    last_check: Mapped[dict[str, Any]] = mapped_column(default=dict)


Index("ix_incidents_component_resolved", Incident.component, Incident.resolved_at)


class HealingOverride(Base):
    """A person's pause of healing for one component, or ``*`` for all; resume keeps the row."""

    __tablename__ = "healing_overrides"

    component: Mapped[str] = mapped_column(String(64), primary_key=True)
    paused: Mapped[bool]
    by: Mapped[str] = mapped_column(String(128))
    at: Mapped[datetime]
    reason: Mapped[str] = mapped_column(String(500), default="")


class CostBudgetAlert(Base):
    """One row per budget alert raised: (period kind, period start, level) is raised once.

    Written by the optimize-cost flow (m1lib.ops.cost.budgets) with insert-if-absent: the run whose
    insert lands raises the alert, so concurrent runs raise it once per period; read by nobody else.
    """

    __tablename__ = "cost_budget_alerts"

    period_kind: Mapped[str] = mapped_column(String(8), primary_key=True)  # day, month
    period_start: Mapped[datetime] = mapped_column(primary_key=True)
    level: Mapped[str] = mapped_column(String(8), primary_key=True)  # soft, hard
    raised_at: Mapped[datetime]
    spent_micros: Mapped[int] = mapped_column(BigInteger)
    budget_micros: Mapped[int] = mapped_column(BigInteger)


class CacheTtlPolicy(Base):
    """One row per tool: the TTL every process's ``cached_call`` uses when the caller gives none.

    Written by ``m1 cache policy set`` / ``PUT /api/m1/cache/policy/{tool}`` and the
    optimize-cost flow (m1lib.ops.cost.policy); read by every process's policy refresher on the
    ``cache.policy.reload`` command and every ``M1_CACHE_POLICY_REFRESH_S``. ``ttl_s`` never
    exceeds ``staleness_budget_s``; nor does ``ttl_s + stale_while_revalidate_s``.
    """

    __tablename__ = "cache_ttl_policy"

    tool: Mapped[str] = mapped_column(String(128), primary_key=True)
    ttl_s: Mapped[float] = mapped_column(Float)
    staleness_budget_s: Mapped[float] = mapped_column(Float)
    peak_ttl_s: Mapped[float | None] = mapped_column(Float)
    offpeak_ttl_s: Mapped[float | None] = mapped_column(Float)
    peak_start_hour: Mapped[int | None] = mapped_column(Integer)  # UTC, inclusive
    peak_end_hour: Mapped[int | None] = mapped_column(Integer)  # UTC, exclusive
    stale_while_revalidate_s: Mapped[float] = mapped_column(Float, default=0.0)
    updated_at: Mapped[datetime]
    updated_by: Mapped[str] = mapped_column(String(128))
    version: Mapped[int] = mapped_column(Integer, default=1)


class CacheTtlObservation(Base):
    """One process's TTL optimiser's recommendation for one tool, with what it saw (upserted).

    Written by every process that follows the TTL policy (m1lib.ops.cost.observe) every
    ``M1_COST_TTL_PUBLISH_S``; read by the optimize-cost flow (rows younger than
    ``M1_COST_TTL_OBSERVATION_MAX_AGE_S``, weighted by ``requests_per_h``); pruned by housekeeping.
    ``requests_by_hour``: 24 request counts by UTC hour of day since the process started.
    """

    __tablename__ = "cache_ttl_observations"
    __table_args__ = (
        Index("ix_cache_ttl_observations_process_tool", "process", "tool", unique=True),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    process: Mapped[str] = mapped_column(String(200))
    tool: Mapped[str] = mapped_column(String(128))
    ttl_s: Mapped[float] = mapped_column(Float)
    reason: Mapped[str] = mapped_column(String(200))
    requests_per_h: Mapped[float] = mapped_column(Float)
    change_rate_per_h: Mapped[float | None] = mapped_column(Float)
    expected_spend_usd_per_h: Mapped[float | None] = mapped_column(Float)
    expected_stale_per_h: Mapped[float | None] = mapped_column(Float)
    baseline_spend_usd_per_h: Mapped[float | None] = mapped_column(Float)
    baseline_stale_per_h: Mapped[float | None] = mapped_column(Float)
    tracked_keys: Mapped[int] = mapped_column(Integer)
    requests_by_hour: Mapped[list[int]] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(index=True)


class CacheTtlCounter(Base):
    """One process's cumulative cache counters for one tool at one publish (appended, not upserted).

    Written with the observations every ``M1_COST_TTL_PUBLISH_S`` (m1lib.ops.cost.staleness): hits
    served and suspect hits (served from an entry a later refetch found changed) since the process
    (``process``, ``started_at``) began; a window's stale rate is the difference of two rows.
    Rows older than ``M1_HOUSEKEEPING_TTL_OBSERVATION_RETENTION`` are pruned on publish.
    """

    __tablename__ = "cache_ttl_counters"
    __table_args__ = (Index("ix_cache_ttl_counters_tool_at", "tool", "at"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    process: Mapped[str] = mapped_column(String(200))
    started_at: Mapped[datetime] = mapped_column()
    tool: Mapped[str] = mapped_column(String(128))
    at: Mapped[datetime] = mapped_column(index=True)
    hits: Mapped[int] = mapped_column(BigInteger)
    suspect_hits: Mapped[int] = mapped_column(BigInteger)
    refetches: Mapped[int] = mapped_column(BigInteger)
    changed: Mapped[int] = mapped_column(BigInteger)


class CacheTtlChange(Base):
    """One applied TTL policy change with the figures around it; the guard reverts harmful ones.

    Written by ``apply_changes`` (before figures) and the guard (after figures, ``reverted_at``,
    ``reason``); read by the optimize-cost flow and ``m1 cache policy show --changes``.
    ``before`` and ``after`` are the tool's policy as JSON (``before`` null: the tool had none);
    figures are ``{hit_rate, error_rate, stale_rate, spend_usd}``.
    """

    __tablename__ = "cache_ttl_changes"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    tool: Mapped[str] = mapped_column(String(128), index=True)
    before: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    figures_before: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    figures_after: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    applied_by: Mapped[str] = mapped_column(String(128))
    applied_at: Mapped[datetime] = mapped_column(index=True)
    checked_at: Mapped[datetime | None]
    reverted_at: Mapped[datetime | None]
    reason: Mapped[str] = mapped_column(String(500), default="")
