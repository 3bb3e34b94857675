"""The one configuration schema of M1: every ``M1_*`` variable, typed, with default, unit and meaning.

Nothing else in M1 reads the environment. Groups are nested models filled from ``M1_<GROUP>_<FIELD>``
(``M1_REVOCATION_RESYNC_S`` fills ``revocation.resync_s``); the README's configuration table and
``.env.example`` are generated from this file by ``m1 config docs``.

Tests build ``Settings(..., _env_file=None)`` directly: constructor values beat the environment.
"""

from __future__ import annotations

import os
import re
import socket
import warnings
from collections.abc import Iterator, Mapping
from datetime import timedelta
from decimal import Decimal
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    Field,
    IPvAnyNetwork,
    JsonValue,
    SecretStr,
    ValidationError,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from pydantic_settings import SettingsError as _SourceError

from m1lib.errors import SettingsError

ENV_PREFIX = "M1_"
PROJECT_ROOT = Path(__file__).resolve().parent.parent
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
MIN_SECRET_BYTES = 32


def parse_duration(value: Any) -> Any:
    """Accept ``90``, ``"90s"``, ``"15m"``, ``"24h"`` or ``"7d"``; pydantic reports anything else."""
    if isinstance(value, str):
        match = _DURATION.match(value)
        if not match:
            raise ValueError(
                f"{value!r} is not a duration; use a number with s, m, h or d (e.g. 24h)"
            )
        return timedelta(seconds=float(match.group(1)) * _UNIT_SECONDS[match.group(2)])
    return value


def _empty_as_none(value: Any) -> Any:
    return None if isinstance(value, str) and not value.strip() else value


def _split_list(value: Any) -> Any:
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return value  # JSON list, pydantic parses it
        return [item.strip() for item in text.split(",") if item.strip()]
    return value


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
OptionalSecret = Annotated[SecretStr | None, BeforeValidator(_empty_as_none)]
OptionalPath = Annotated[Path | None, BeforeValidator(_empty_as_none)]
OptionalStr = Annotated[str | None, BeforeValidator(_empty_as_none)]
OptionalDecimal = Annotated[Decimal | None, BeforeValidator(_empty_as_none)]


def _f(default: Any, description: str, unit: str = "", **kwargs: Any) -> Any:
    """A field with a description and a unit the docs generator reads."""
    extra: dict[str, JsonValue] | None = {"unit": unit} if unit else None
    return Field(default, description=description, json_schema_extra=extra, **kwargs)


class Environment(StrEnum):
    DEVELOPMENT = "development"
    STAGING = "staging"
    PRODUCTION = "production"


class LogFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


class LogLevel(StrEnum):
    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"


class ApiSettings(BaseModel):
    host: str = _f("127.0.0.1", "Address the M1 API listens on.")
    port: int = _f(8000, "Port of the M1 API.", ge=1, le=65535)
    public_url: OptionalStr = _f(
        None, "Base URL other processes use to reach this API (default http(s)://host:port)."
    )
    url: OptionalStr = _f(
        None,
        "The API a process outside a replica (flow run, CLI, service) sends its events and "
        "queries to; empty: this configuration's own API (public URL, else host:port).",
    )
    key: OptionalSecret = _f(
        None,
        "Credential such a process uses with M1_API_URL; `m1 up` hands its flow runs one.",
    )
    gc_young_threshold: int = _f(
        50_000,
        "Allocations between young garbage collections in an API replica (Python's default is "
        "700). Rarer young collections promote fewer short-lived objects (a stream client's "
        "per-tick wait), so the full collections that pause every stream come rarely; 0 keeps "
        "Python's default.",
        ge=0,
        le=10_000_000,
    )
    key_block: str = _f(
        "m1-api-key",
        "Prefect Secret block a flow run reads its M1_API_KEY from when that is not set.",
        pattern=r"^[a-z0-9][a-z0-9-]{0,63}$",
    )


class DatabaseSettings(BaseModel):
    url: OptionalSecret = _f(
        None,
        "SQLAlchemy URL of M1's database; empty: a SQLite file in the data directory. "
        "postgresql:// URLs use psycopg 3.",
    )
    pool_size: int = _f(5, "Connections kept open per process (PostgreSQL).", ge=1, le=100)
    connect_timeout_s: float = _f(3.0, "Time allowed to open a database connection.", "s", gt=0)


class RedisSettings(BaseModel):
    url: OptionalSecret = _f(None, "Redis URL; empty: no Redis (memory cache, one replica alone).")
    prefix: str = _f(
        "m1",
        "Namespace of every Redis key and channel, so deployments can share one Redis.",
        pattern=r"^[A-Za-z0-9_.:-]{1,64}$",
    )
    timeout_s: float = _f(
        0.5, "Socket timeout of Redis calls; past it Redis counts as failing.", "s", gt=0
    )


class PrefectSettings(BaseModel):
    host: str = _f("127.0.0.1", "Address of the local Prefect server and UI started by `m1 up`.")
    port: int = _f(4200, "Port of the local Prefect server and UI.", ge=1, le=65535)
    home: OptionalPath = _f(None, "PREFECT_HOME for `m1 up`; empty: <data dir>/prefect.")
    retention: Duration = _f(
        timedelta(days=30),
        "How long the Prefect server keeps finished flow runs and events (min 1h).",
        "duration",
    )
    runner_poll_s: int = _f(
        3,
        "How often the deployment runner polls for runs to start: a self-heal run started by the "
        "health check waits up to this long to begin (Prefect's own default is 10).",
        "s",
        ge=1,
    )
    deployments_file: OptionalPath = _f(
        None,
        "The deployments file `m1 up` serves; empty: the prefect.yaml shipped inside M1 "
        "(the project's single source of truth).",
    )


class LogSettings(BaseModel):
    level: LogLevel = _f(LogLevel.INFO, "Lowest level logged.")
    format: LogFormat = _f(LogFormat.TEXT, "text for people, json for one JSON object per line.")


class CorsSettings(BaseModel):
    origins: Annotated[list[str], NoDecode, BeforeValidator(_split_list)] = _f(
        [], "Browser origins allowed to call the API (comma-separated); never `*` with credentials."
    )


class TlsSettings(BaseModel):
    cert_file: OptionalPath = _f(None, "PEM certificate; with the key file, the API serves HTTPS.")
    key_file: OptionalPath = _f(None, "PEM private key of the certificate.")
    expiry_warn_days: int = _f(
        14,
        "`m1 validate config` flags a certificate that expires within this many days.",
        "d",
        ge=1,
        le=365,
    )


class TokenSettings(BaseModel):
    ttl_s: int = _f(
        300,
        "Lifetime of a capability token: the default and the maximum (longer tokens are refused).",
        "s",
        ge=1,
        le=86400,
    )
    leeway_s: int = _f(5, "Clock skew allowed when checking exp, nbf and iat.", "s", ge=0, le=300)
    max_bytes: int = _f(
        4096,
        "Largest token verify looks at; longer ones are refused before any decoding.",
        "bytes",
        ge=512,
        le=65536,
    )


class JwtSettings(BaseModel):
    algorithm: str = _f(
        "HS256",
        "Signing algorithm of capability tokens: HS256, RS256 or EdDSA.",
        pattern=r"^(HS256|RS256|EdDSA)$",
    )
    secret: OptionalSecret = _f(
        None,
        "HS256 signing secret (at least 32 bytes); empty: generated once into the data directory.",
    )
    private_key_file: OptionalPath = _f(
        None, "PEM private key that signs tokens with RS256 (RSA, 2048 bits or more) or EdDSA."
    )
    kid: OptionalStr = _f(
        None,
        "Key id written into every token header; empty: derived from the signing key's fingerprint.",
        pattern=r"^[A-Za-z0-9._:-]{1,64}$",
    )
    verify_keys: OptionalSecret = _f(
        None,
        "Older keys still accepted during a rotation, comma-separated kid=value; value is an "
        "HS256 secret or file:<path> (PEM public key, or a file holding an HS256 secret).",
    )
    issuer: str = _f("m1", "iss claim of issued tokens; verify accepts no other.", min_length=1)
    audience: str = _f(
        "m1-tools", "aud claim of issued tokens; verify accepts no other.", min_length=1
    )


class RevocationSettings(BaseModel):
    enabled: bool = _f(
        True, "Check every token against the revocation state (off is logged loudly)."
    )
    resync_s: float = _f(1.0, "Period of the database resync of revocations.", "s", gt=0)
    max_staleness_s: float = _f(
        10.0, "Past this age of the last resync a replica denies and reports not ready.", "s", gt=0
    )
    fail_open: bool = _f(
        False, "Accept tokens when revocation state is stale (critical in production)."
    )
    reconcile_s: float = _f(
        60.0, "Period of the full count-and-hash reconciliation of revocations.", "s", gt=0
    )
    overlap_s: float = _f(
        30.0,
        "Window each resync re-reads behind its cursor (ids are not commit order); longer "
        "than any revoke transaction.",
        "s",
        gt=0,
    )

    @model_validator(mode="after")
    def _staleness_above_resync(self) -> RevocationSettings:
        """A bound at or below the resync period would make a healthy replica flap not-ready."""
        if self.max_staleness_s <= self.resync_s:
            raise ValueError(
                f"M1_REVOCATION_MAX_STALENESS_S ({self.max_staleness_s:g}) must be greater than "
                f"M1_REVOCATION_RESYNC_S ({self.resync_s:g})"
            )
        return self


class PolicySettings(BaseModel):
    tools_file: OptionalPath = _f(
        None, "TOML file of the operator's tools, added to M1's built-in tool registry."
    )


class RawSettings(BaseModel):
    retention: Duration = _f(timedelta(hours=24), "How long raw events are kept.", "duration")


class EventsSettings(BaseModel):
    queue_size: int = _f(
        1_000_000,
        "Events waiting for the store; past it new events are dropped and counted, never blocking "
        "(about 200 bytes each while waiting).",
        ge=100,
        le=10_000_000,
    )
    flush_ms: int = _f(
        50, "How often the ingest thread moves queued events into the store.", "ms", ge=1, le=10_000
    )
    chunk_events: int = _f(
        1_048_576,
        "Largest raw chunk (and rollup block) in memory; smaller ones are merged up to it.",
        ge=1024,
    )
    persist_s: float = _f(
        60.0, "How often a replica writes its own closed chunks to metric_chunks.", "s", gt=0
    )
    stream_maxlen: int = _f(
        10_000,
        "Entries kept in the shared Redis event stream (one entry is a batch of events).",
        ge=100,
    )
    ingest_max_bytes: int = _f(
        4 * 1024 * 1024,
        "Largest body POST /api/m1/events reads (10,000 typical events fit); larger is a 413.",
        "bytes",
        ge=1024,
        le=64 * 1024 * 1024,
    )
    ingest_max_events: int = _f(
        10_000,
        "Most events one POST /api/m1/events may carry; more is refused with 413.",
        ge=1,
        le=1_000_000,
    )
    forward_interval_ms: int = _f(
        500,
        "Outside a replica, without Redis: least time between two POSTs of forwarded events "
        "(alerts go at once), so a busy process stays under M1_RATELIMIT_INGEST_PER_MIN.",
        "ms",
        ge=0,
        le=60_000,
    )
    forward_exit_s: float = _f(
        5.0,
        "Outside a replica: how long a process exiting may spend sending its last events.",
        "s",
        ge=0,
        le=300,
    )
    forward_claim_idle_s: float = _f(
        30.0,
        "A forwarded batch a replica took but did not acknowledge for this long (it died) is "
        "taken by another replica.",
        "s",
        gt=0,
    )


class RollupSettings(BaseModel):
    retention_1m: Duration = _f(
        timedelta(days=7), "How long 1-minute rollups are kept.", "duration"
    )
    retention_1h: Duration = _f(timedelta(days=90), "How long 1-hour rollups are kept.", "duration")


class QuerySettings(BaseModel):
    max_range: Duration = _f(
        timedelta(days=90), "Longest timeRange a dashboard query may ask for.", "duration"
    )
    max_groups: int = _f(
        100_000, "Most groups (buckets x groupBy values) one query may build.", ge=1
    )
    max_rows: int = _f(50_000, "Most rows one query returns (and the largest limit).", ge=1)
    timeout_s: float = _f(
        10.0, "Longest time one query may compute, every phase included.", "s", gt=0
    )
    max_memory_mb: int = _f(
        256,
        "Most memory one query may use, checked against an estimate before it allocates.",
        "MB",
        ge=1,
    )
    max_detect_cells: int = _f(
        20_000_000,
        "Most work anomaly detection may do: series x buckets x window, checked before it starts.",
        ge=1,
    )
    max_concurrent: int = _f(
        2, "Queries one replica computes at once; more are refused with 503 and Retry-After.", ge=1
    )


class HealthSettings(BaseModel):
    period_s: int = _f(60, "Period of the health-check flow.", "s", ge=1)
    latency_degraded_ms: float = _f(
        100.0, "A check's round trip (or the policy p99) past this is degraded.", "ms", ge=0
    )
    latency_unhealthy_ms: float = _f(
        500.0, "A check's round trip (or the policy p99) past this is unhealthy.", "ms", ge=0
    )
    error_rate_degraded: float = _f(
        0.05,
        "Share of failed probes over the error window past which a check is degraded.",
        ge=0,
        le=1,
    )
    error_rate_unhealthy: float = _f(
        0.20,
        "Share of failed probes (or not-ready replicas) past which a check is unhealthy.",
        ge=0,
        le=1,
    )
    error_window_s: float = _f(
        300.0, "Window a checker's error rates are computed over.", "s", gt=0, le=86400
    )
    memory_degraded_pct: float = _f(
        75.0,
        "Memory used (machine, or a replica's RSS of it) past this is degraded.",
        "%",
        ge=0,
        le=100,
    )
    memory_unhealthy_pct: float = _f(
        90.0,
        "Memory used (machine, or a replica's RSS of it) past this is unhealthy.",
        "%",
        ge=0,
        le=100,
    )
    lag_degraded_s: float = _f(5.0, "Event store lag past this is degraded.", "s", ge=0)
    lag_unhealthy_s: float = _f(30.0, "Event store lag past this is unhealthy.", "s", ge=0)
    check_timeout_s: float = _f(
        2.0,
        "Time one check (and each HTTP probe in it) may take; past it the check is unhealthy.",
        "s",
        gt=0,
        le=300,
    )

    @model_validator(mode="after")
    def _degraded_before_unhealthy(self) -> HealthSettings:
        """A degraded bound above the unhealthy one would skip the warning."""
        for name, unit in (
            ("latency", "_ms"),
            ("error_rate", ""),
            ("memory", "_pct"),
            ("lag", "_s"),
        ):
            degraded = getattr(self, f"{name}_degraded{unit}")
            unhealthy = getattr(self, f"{name}_unhealthy{unit}")
            if degraded > unhealthy:
                low = env_name(("health", f"{name}_degraded{unit}"))
                high = env_name(("health", f"{name}_unhealthy{unit}"))
                raise ValueError(f"{low} ({degraded:g}) must not exceed {high} ({unhealthy:g})")
        return self


class HealingSettings(BaseModel):
    threshold: int = _f(3, "Consecutive failures of a component that start its self-heal.", ge=1)
    cooldown_s: float = _f(
        300.0,
        "Least time between two heals of one component while its failure streak lasts.",
        "s",
        ge=0,
    )
    max_attempts: int = _f(
        3,
        "Heals of one component in one failure streak; the next due one escalates to a person.",
        ge=1,
        le=100,
    )
    ack_timeout_s: float = _f(
        15.0,
        "How long a self-heal action waits for every live replica to acknowledge its command.",
        "s",
        gt=0,
        le=600,
    )
    verify_s: float = _f(
        15.0,
        "How long a self-heal action re-runs the component's check until it passes (replicas "
        "report some figures only with their next heartbeat).",
        "s",
        ge=0,
        le=600,
    )
    database_wait_s: float = _f(
        60.0,
        "How long self-heal waits, with backoff, for the database to come back (replicas "
        "reconnect by themselves; the flow verifies and records).",
        "s",
        ge=0,
        le=3600,
    )


class AlertSettings(BaseModel):
    webhook_url: OptionalSecret = _f(
        None,
        "Where an escalated incident is POSTed as JSON; empty: no webhook (the critical alert "
        "and the log line remain).",
    )
    webhook_timeout_s: float = _f(
        5.0, "Time allowed for the escalation webhook's POST.", "s", gt=0, le=60
    )


class StreamSettings(BaseModel):
    tick_ms: int = _f(500, "Period of the dashboard stream's snapshots.", "ms", ge=50)
    window_s: float = _f(
        60.0, "Sliding window the stream's figures are computed over.", "s", gt=0, le=86400
    )
    max_clients: int = _f(
        2000, "Stream clients one replica serves at once; past it a 503 with Retry-After.", ge=1
    )
    client_queue: int = _f(
        64, "Messages queued per stream client; a client that lets it fill is dropped.", ge=1
    )
    heartbeat_s: float = _f(15.0, "Period of the stream's heartbeat comment.", "s", gt=0)
    alert_buffer: int = _f(
        1000, "Recent alerts a replica keeps to replay after Last-Event-ID.", ge=1
    )
    retry_ms: int = _f(3000, "Reconnection delay the stream asks browsers to use.", "ms", ge=0)


class MetricsSettings(BaseModel):
    public: bool = _f(False, "Serve /metrics without credentials.")


class CacheSettings(BaseModel):
    max_entries: int = _f(10_000, "Entries kept by the in-memory cache (LRU).", ge=1)
    default_ttl_s: float = _f(300.0, "TTL of a cache entry when the caller gives none.", "s", gt=0)
    probe_s: float = _f(2.0, "How often an open circuit breaker probes Redis.", "s", gt=0)
    policy_refresh_s: float = _f(
        30.0,
        "How often every process re-reads the cache TTL policy from the database (replicas also on "
        "the cache.policy.reload command); 0: never periodically.",
        "s",
        ge=0,
    )


class ControlSettings(BaseModel):
    poll_s: float = _f(
        1.0, "How often a replica polls the control channel (pub/sub wakes it sooner).", "s", gt=0
    )
    command_ttl_s: int = _f(
        3600, "A command not applied by a replica within this time is skipped.", "s", ge=1
    )


class ReplicaSettings(BaseModel):
    id: OptionalStr = _f(None, "Stable name of this API replica; empty: <hostname>-<port>.")
    heartbeat_s: float = _f(5.0, "Period of the replica heartbeat row.", "s", gt=0)


class HousekeepingSettings(BaseModel):
    """What the daily housekeeping flow keeps; older rows are pruned (see docs/contracts.md)."""

    replica_gone_after: Duration = _f(
        timedelta(days=7),
        "A replicas row whose heartbeat is older than this is pruned (gone); at least 1h.",
        "duration",
        ge=timedelta(hours=1),
    )
    incident_retention: Duration = _f(
        timedelta(days=90),
        "Incidents resolved longer ago than this are pruned (open ones never); at least 1d.",
        "duration",
        ge=timedelta(days=1),
    )
    streak_retention: Duration = _f(
        timedelta(days=30),
        "Health-streak rows not updated for this long are pruned; at least 1h.",
        "duration",
        ge=timedelta(hours=1),
    )
    ttl_observation_retention: Duration = _f(
        timedelta(days=1),
        "Published cache TTL recommendations (cache_ttl_observations) not republished for this "
        "long are pruned (their process is gone), and so are hit counters (cache_ttl_counters) "
        "older than this (by the processes, on publish); at least 1h.",
        "duration",
        ge=timedelta(hours=1),
    )


class CostSettings(BaseModel):
    """What model tokens and paid tool calls cost (m1lib/ops/cost/prices.py) and the spend budgets
    the optimize-cost flow checks (m1lib/ops/cost/budgets.py)."""

    prices_file: OptionalPath = _f(
        None,
        "TOML or JSON file (by its .toml/.json suffix) of model prices (USD per million input and "
        "output tokens) and paid tools' prices (USD per call); it overrides and adds to the "
        "built-in table (claude-haiku-4-5 1/5, claude-sonnet-4-5 3/15, claude-opus-4-5 5/25).",
    )
    budget_daily_usd: OptionalDecimal = _f(
        None,
        "Spend allowed per UTC day in USD (at most 6 decimals); empty: no daily budget.",
        "USD",
        gt=0,
        decimal_places=6,
    )
    budget_monthly_usd: OptionalDecimal = _f(
        None,
        "Spend allowed per UTC calendar month in USD (at most 6 decimals); empty: no monthly "
        "budget.",
        "USD",
        gt=0,
        decimal_places=6,
    )
    budget_soft_ratio: float = _f(
        0.8,
        "Share of a budget whose spending raises the soft (warning) alert; the whole budget "
        "raises the hard (critical) one. Each once per period.",
        gt=0,
        lt=1,
    )
    ttl_observe: bool = _f(
        True,
        "Every process that follows the cache TTL policy feeds a TTL optimiser from its cache's "
        "gets and fills and publishes its per-tool recommendation (cache_ttl_observations) for "
        "the optimize-cost flow.",
    )
    ttl_publish_s: float = _f(
        300.0,
        "How often a process publishes its TTL optimiser's recommendation (checked on the policy "
        "refresh loop, so at most as often as M1_CACHE_POLICY_REFRESH_S).",
        "s",
        gt=0,
    )
    ttl_max_keys: int = _f(
        10_000,
        "Keys per tool a process's TTL optimiser follows (the first seen); later keys are not "
        "observed, which bounds its memory.",
        ge=1,
    )
    ttl_default_call_usd: float = _f(
        0.0001,
        "What the TTL optimiser takes one uncached call of a tool without a price in the price "
        "table (M1_COST_PRICES_FILE) to cost; 0: such tools keep the baseline TTL.",
        "USD",
        ge=0,
    )
    ttl_default_budget_s: float = _f(
        3600.0,
        "Staleness budget of a tool without a cache TTL policy rule when the optimize-cost flow "
        "first proposes one (its TTL never exceeds it).",
        "s",
        ge=60,
        le=30 * 86400,
    )
    ttl_observation_max_age_s: float = _f(
        900.0,
        "The optimize-cost flow combines only published TTL recommendations younger than this.",
        "s",
        gt=0,
    )
    ttl_settle_s: float = _f(
        3600.0,
        "How long an applied TTL change runs before the optimize-cost flow's guard judges it.",
        "s",
        gt=0,
    )
    ttl_peak_ratio: float = _f(
        2.0,
        "A tool whose request rate at peak hours differs from off-peak by this factor (either "
        "way) gets peak and off-peak TTLs.",
        gt=1,
    )


class UpSettings(BaseModel):
    """How `m1 up` restarts a child that died (deployments/restarts.py)."""

    restart_max: int = _f(
        5,
        "Restarts of one child of `m1 up` within M1_UP_RESTART_WINDOW_S; its next death stops "
        "everything (0: never restart, the first death stops everything).",
        ge=0,
        le=1000,
    )
    restart_window_s: float = _f(
        600.0, "The window M1_UP_RESTART_MAX counts restarts in.", "s", gt=0, le=86400
    )


class AuthSettings(BaseModel):
    refresh_s: float = _f(
        5.0,
        "How often a replica reloads API credentials (a revoked key stops within it).",
        "s",
        gt=0,
    )
    session_ttl_s: int = _f(
        8 * 3600, "Lifetime of a browser session cookie.", "s", ge=60, le=7 * 86400
    )


class RatelimitSettings(BaseModel):
    read_per_min: int = _f(
        600, "GET requests per minute, per credential and per client address.", ge=1
    )
    query_per_min: int = _f(
        120, "Dashboard queries per minute, per credential and per client address.", ge=1
    )
    admin_per_min: int = _f(
        60, "Admin changes (revoke, commands) per minute, per credential and address.", ge=1
    )
    login_per_min: int = _f(
        10, "Session logins and failed authentications per minute per address.", ge=1
    )
    ingest_per_min: int = _f(
        600,
        "Event batches (POST /api/m1/events) per minute, per credential and per client address.",
        ge=1,
    )


class SloSettings(BaseModel):
    file: OptionalPath = _f(
        None,
        "The SLO file the production-validation suite grades against (docs/contracts.md); "
        "empty: the one shipped with M1 (m1lib/ops/validation/slo.yaml).",
    )


class ValidationSettings(BaseModel):
    admin_key: OptionalSecret = _f(
        None,
        "Admin key the production-validation suite probes the API with; empty: the Secret "
        "block M1_VALIDATION_SECRET_BLOCK (flow runs), else the admin key `m1 up` generated "
        "in the data directory, else M1_API_KEY.",
    )
    database_password: OptionalSecret = _f(
        None,
        "Password the production-validation suite puts into a database URL given without one.",
    )
    redis_password: OptionalSecret = _f(
        None, "Password the production-validation suite puts into a Redis URL given without one."
    )
    secret_block: str = _f(
        "m1-validation",
        "Prefect Secret block a production-validation flow run reads its secrets from: a JSON "
        "object with admin_key, database_password, redis_password (any may be missing).",
        pattern=r"^[a-z0-9][a-z0-9-]{0,63}$",
    )


class Settings(BaseSettings):
    """Everything M1 can be told, read once from ``M1_*`` variables and an optional env file
    (``M1_ENV_FILE``, else ``./.env``: see :func:`load_settings`)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="_",
        env_nested_max_split=1,
        env_file=".env",
        extra="ignore",
        validate_default=True,
    )

    env: Environment = _f(Environment.DEVELOPMENT, "development, staging or production.")
    env_file: OptionalPath = _f(
        None,
        "The dotenv file this configuration is read from instead of ./.env (`m1 --env-file PATH` "
        "sets it; `m1 up` hands it to its children); the environment still beats the file.",
    )
    trusted_proxies: Annotated[list[IPvAnyNetwork], NoDecode, BeforeValidator(_split_list)] = _f(
        [],
        "Load balancers and proxies (addresses or networks, comma-separated) whose "
        "X-Forwarded-For names the client for rate limits and logs; from any other peer the "
        "header is ignored. Empty: the connection's own address is the client.",
    )
    data_dir: Path = _f(
        Path(".m1"), "Where the embedded defaults keep their files (SQLite, secrets)."
    )
    api: ApiSettings = ApiSettings()
    database: DatabaseSettings = DatabaseSettings()
    redis: RedisSettings = RedisSettings()
    prefect: PrefectSettings = PrefectSettings()
    log: LogSettings = LogSettings()
    cors: CorsSettings = CorsSettings()
    tls: TlsSettings = TlsSettings()
    token: TokenSettings = TokenSettings()
    jwt: JwtSettings = JwtSettings()
    revocation: RevocationSettings = RevocationSettings()
    policy: PolicySettings = PolicySettings()
    raw: RawSettings = RawSettings()
    events: EventsSettings = EventsSettings()
    rollup: RollupSettings = RollupSettings()
    query: QuerySettings = QuerySettings()
    health: HealthSettings = HealthSettings()
    healing: HealingSettings = HealingSettings()
    alert: AlertSettings = AlertSettings()
    stream: StreamSettings = StreamSettings()
    metrics: MetricsSettings = MetricsSettings()
    cache: CacheSettings = CacheSettings()
    control: ControlSettings = ControlSettings()
    replica: ReplicaSettings = ReplicaSettings()
    housekeeping: HousekeepingSettings = HousekeepingSettings()
    cost: CostSettings = CostSettings()
    up: UpSettings = UpSettings()
    auth: AuthSettings = AuthSettings()
    ratelimit: RatelimitSettings = RatelimitSettings()
    slo: SloSettings = SloSettings()
    validation: ValidationSettings = ValidationSettings()

    @model_validator(mode="after")
    def _check_secrets(self) -> Settings:
        """Weak or missing secrets: a warning in development, an error in production."""
        problems: list[str] = []
        secret = self.jwt.secret
        if secret is not None and len(secret.get_secret_value().encode()) < MIN_SECRET_BYTES:
            problems.append(f"M1_JWT_SECRET: shorter than {MIN_SECRET_BYTES} bytes")
        if (self.tls.cert_file is None) != (self.tls.key_file is None):
            raise ValueError("M1_TLS_CERT_FILE and M1_TLS_KEY_FILE must be set together")
        if "*" in self.cors.origins:
            problems.append("M1_CORS_ORIGINS: '*' is not allowed (credentials are sent)")
        if problems and self.env is Environment.PRODUCTION:
            raise ValueError("; ".join(problems))
        for problem in problems:
            warnings.warn(problem, stacklevel=2)
        return self

    # Derived values: computed here so no other module needs to know the defaults' rules.

    @property
    def database_url(self) -> str:
        if self.database.url is not None:
            return self.database.url.get_secret_value()
        return f"sqlite:///{(self.data_dir / 'm1.db').resolve()}"

    @property
    def redis_url(self) -> str | None:
        return None if self.redis.url is None else self.redis.url.get_secret_value()

    @property
    def prefect_home(self) -> Path:
        return (self.prefect.home or self.data_dir / "prefect").resolve()

    @property
    def prefect_api_url(self) -> str:
        return f"http://{self.prefect.host}:{self.prefect.port}/api"

    @property
    def tls_enabled(self) -> bool:
        return self.tls.cert_file is not None

    @property
    def api_base_url(self) -> str:
        if self.api.public_url:
            return self.api.public_url.rstrip("/")
        scheme = "https" if self.tls_enabled else "http"
        return f"{scheme}://{self.api.host}:{self.api.port}"

    @property
    def client_api_url(self) -> str:
        """Where a process outside a replica reaches the API: M1_API_URL, else this API's own."""
        return (self.api.url or self.api_base_url).rstrip("/")

    @property
    def replica_id(self) -> str:
        return self.replica.id or f"{socket.gethostname()}-{self.api.port}"


def env_name(path: tuple[str | int, ...]) -> str:
    """``("revocation", "resync_s")`` -> ``M1_REVOCATION_RESYNC_S``."""
    return ENV_PREFIX + "_".join(str(part) for part in path if isinstance(part, str)).upper()


ENV_FILE_VARIABLE = ENV_PREFIX + "ENV_FILE"
DEFAULT_ENV_FILE = Path(".env")


def env_file_path() -> Path:
    """The dotenv file this process reads: ``M1_ENV_FILE`` when set, else ``./.env``."""
    named = os.environ.get(ENV_FILE_VARIABLE, "").strip()
    return Path(named) if named else DEFAULT_ENV_FILE


def use_env_file(path: Path) -> None:
    """Read ``path`` instead of ``./.env`` from now on, in this process and the ones it starts
    (``m1 --env-file PATH``): the children inherit ``M1_ENV_FILE``, absolute."""
    os.environ[ENV_FILE_VARIABLE] = str(path.resolve())
    get_settings.cache_clear()


def _checked_env_file() -> Path:
    """The env file to read; one named by ``M1_ENV_FILE`` must exist (a typo would silently
    give the defaults), while the default ``./.env`` is optional."""
    path = env_file_path()
    if path != DEFAULT_ENV_FILE and not path.is_file():
        raise SettingsError(
            f"{ENV_FILE_VARIABLE}: {path} is not a readable file; "
            "allowed: the path of a dotenv file of M1_* variables"
        )
    return path


def raw_environment(env_file: Path | None = None) -> dict[str, str]:
    """The ``M1_*`` variables as written, before validation: the env file, then the environment
    over it (as the loader ranks them), names upper-cased. ``m1 validate config`` reads these so
    that one bad value becomes one finding instead of a refusal to load."""
    from dotenv import dotenv_values

    path = env_file or env_file_path()
    values: dict[str, str] = {}
    if path.is_file():
        for name, value in dotenv_values(path).items():
            if name.upper().startswith(ENV_PREFIX) and value is not None:
                values[name.upper()] = value
    for name, value in os.environ.items():
        if name.upper().startswith(ENV_PREFIX):
            values[name.upper()] = value
    return values


def load_settings(**overrides: Any) -> Settings:
    """Build settings, turning a validation error into one that names each variable."""
    if "_env_file" not in overrides:
        overrides["_env_file"] = _checked_env_file()
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            loc = tuple(part for part in error["loc"] if isinstance(part, str))
            name = env_name(loc) if loc else "settings"
            lines.append(f"{name}: {error['msg']}")
        raise SettingsError("invalid configuration:\n  " + "\n  ".join(lines)) from None
    except _SourceError as exc:  # a value that is not even parseable (bad JSON in a list, say)
        raise SettingsError(f"invalid configuration: {exc}") from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once. Tests build their own ``Settings`` instead."""
    return load_settings()


def adopt_api_key(key: str) -> None:
    """Use ``key`` as ``M1_API_KEY`` from now on, in this process and the ones it starts: a
    flow run that read its credential from a Prefect Secret block, before it records anything."""
    os.environ[env_name(("api", "key"))] = key
    get_settings.cache_clear()


# -- the schema as data: the docs generator, `m1 config show` and the names test use this --------


class SettingDoc(BaseModel):
    name: str
    path: tuple[str, ...]
    type: str
    default: str
    unit: str
    description: str
    secret: bool


def _type_name(annotation: Any) -> str:
    """A reader's name for a field type: ``secret``, ``path``, ``one of: a, b``, ``duration``..."""
    args = [arg for arg in getattr(annotation, "__args__", ()) if arg is not type(None)]
    if args and getattr(annotation, "__origin__", None) is not list:
        annotation = args[0]  # X | None: the variable is optional, the type is X
    if isinstance(annotation, type) and issubclass(annotation, StrEnum):
        return "one of: " + ", ".join(member.value for member in annotation)
    names = {
        SecretStr: "secret",
        Path: "path",
        timedelta: "duration",
        bool: "bool",
        int: "int",
        float: "number",
        str: "text",
    }
    if getattr(annotation, "__origin__", None) is list:
        return "list (comma-separated)"
    return names.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _default_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, StrEnum):
        return value.value
    if isinstance(value, timedelta):
        seconds = int(value.total_seconds())
        for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
            if seconds % size == 0:
                return f"{seconds // size}{unit}"
        return f"{seconds}s"
    if isinstance(value, Path):
        try:
            return str(value.relative_to(PROJECT_ROOT))
        except ValueError:
            return str(value)
    if isinstance(value, list):
        return ",".join(str(item) for item in value)
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def iter_setting_docs() -> Iterator[SettingDoc]:
    """Every variable of the schema, in declaration order."""
    for name, field in Settings.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            for sub_name, sub in annotation.model_fields.items():
                yield _doc((name, sub_name), sub)
        else:
            yield _doc((name,), field)


def _doc(path: tuple[str, ...], field: Any) -> SettingDoc:
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    annotation_text = str(field.annotation)
    return SettingDoc(
        name=env_name(path),
        path=path,
        type=_type_name(field.annotation),
        default=_default_text(field.default),
        unit=str(extra.get("unit", "")),
        description=field.description or "",
        secret="SecretStr" in annotation_text,
    )


def masked_values(settings: Settings) -> dict[str, str]:
    """The effective configuration with every secret (and URL password) masked."""
    values: dict[str, str] = {}
    for doc in iter_setting_docs():
        value: Any = settings
        for part in doc.path:
            value = getattr(value, part)
        if isinstance(value, SecretStr):
            values[doc.name] = "**********"
        else:
            values[doc.name] = _default_text(value)
    return values


def redact_url(url: str) -> str:
    """``postgresql://u:pw@h/db`` -> ``postgresql://u:***@h/db`` (``redis://:pw@h`` too): URLs in
    messages never carry passwords."""
    return re.sub(r"(//[^:/@\s]*:)[^@\s]+@", r"\1***@", url)


def _environment_text(value: Any) -> str:
    """A value as its ``M1_*`` variable would spell it, so that reading it back gives it again."""
    if value is None:
        return ""
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, Path):
        return str(value.resolve())
    if isinstance(value, timedelta):
        return f"{value.total_seconds():f}s"
    return _default_text(value)


def settings_environment(settings: Settings) -> dict[str, str]:
    """Every ``M1_*`` variable as these settings hold it, relative paths made absolute.

    A child given these reads the very configuration its parent resolved, whatever its working
    directory and whatever ``.env`` lies there: the environment beats the ``.env`` file.
    """
    values: dict[str, str] = {}
    for doc in iter_setting_docs():
        value: Any = settings
        for part in doc.path:
            value = getattr(value, part)
        values[doc.name] = _environment_text(value)
    return values


def child_environment(settings: Settings, extra: Mapping[str, str]) -> dict[str, str]:
    """The environment for a process M1 starts: ours, the settings as resolved here, and ``extra``."""
    environment = dict(os.environ)
    environment.update(settings_environment(settings))
    environment.update(extra)
    environment.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    return environment


def prefect_api_url_from_environment() -> str | None:
    """An outside Prefect server named by ``PREFECT_API_URL``: then `m1 up` starts none of its own."""
    value = os.environ.get("PREFECT_API_URL", "").strip()
    return value or None
