"""Live rules: probe what the configuration names, each probe within the validation's timeout.

One probe per service (database, Redis, Prefect, M1's own API) is memoised on the context, so
the rules reading it share one connection. A probe never raises: its failure is the answer.
What a probe observed goes to ``context.facts`` (versions, revisions; never secrets).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis
from sqlalchemy.exc import SQLAlchemyError

from m1lib.errors import M1Error
from m1lib.ops.config_rules.base import Context, Hit, live_rule
from m1lib.ops.config_rules.urls import database_url
from m1lib.settings import prefect_api_url_from_environment, redact_url

_REDIS_MIN_VERSION = (6, 2)  # XAUTOCLAIM: forwarded event batches are claimed with it
_MESSAGE_MAX = 200


def _error_text(error: BaseException) -> str:
    """One line for a person: the error's class, and its text where it carries no secret."""
    text = f"{type(error).__name__}: {error}".replace("\n", " ")
    text = redact_url(text)
    return text if len(text) <= _MESSAGE_MAX else text[: _MESSAGE_MAX - 1] + "…"


# -- database --------------------------------------------------------------------------------


@dataclass
class DatabaseProbe:
    error: str | None = None
    missing_file: Path | None = None  # a SQLite file not created yet
    revision: str | None = None
    head: str = ""
    admins: int | None = None


def _probe_database(context: Context) -> DatabaseProbe:
    from m1lib import auth
    from m1lib.db import migrate
    from m1lib.db.session import Database

    settings = context.settings
    probe = DatabaseProbe(head=migrate.head_revision())
    url = database_url(settings.database_url)
    if url is None:
        probe.error = "M1_DATABASE_URL cannot be read (see url.database)"
        return probe
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        path = Path(url.database)
        if not path.exists():  # connecting would create it: the validator changes nothing
            probe.missing_file = path
            return probe
    quick = settings.model_copy(
        update={
            "database": settings.database.model_copy(
                update={"connect_timeout_s": context.timeout_s, "pool_size": 1}
            )
        }
    )
    db = Database(quick)
    try:
        probe.revision = migrate.current_revision(db)
        if probe.revision == probe.head:  # older schemas may lack the credentials table
            probe.admins = sum(
                1
                for row in auth.list_credentials(db)
                if row.role == auth.Role.ADMIN.value and row.revoked_at is None
            )
    except (M1Error, SQLAlchemyError) as error:
        probe.error = _error_text(error)
    finally:
        db.dispose()
    context.facts["database_revision"] = probe.revision or "none"
    context.facts["database_head"] = probe.head
    return probe


def _database(context: Context) -> DatabaseProbe:
    return context.memo("database", lambda: _probe_database(context))


@live_rule("database.unreachable", "CCC", "M1's database does not answer")
def _database_unreachable(context: Context) -> Iterator[Hit]:
    probe = _database(context)
    if probe.error is not None:
        yield Hit(
            "M1_DATABASE_URL",
            f"{redact_url(context.settings.database_url)} did not answer within "
            f"{context.timeout_s:g} s: {probe.error}",
            "check the host, port, credentials and firewall; `m1 db current` retries it",
        )


@live_rule("database.migrations", "LCC", "The database schema is not the one this code expects")
def _migrations(context: Context) -> Iterator[Hit]:
    probe = _database(context)
    if probe.missing_file is not None:
        yield Hit(
            "M1_DATABASE_URL",
            f"the SQLite file {probe.missing_file} does not exist yet",
            "run `m1 db upgrade` (`m1 up` does it on start)",
        )
    elif probe.error is None and probe.revision != probe.head:
        yield Hit(
            "M1_DATABASE_URL",
            f"the schema is at {probe.revision or 'nothing'}, this code expects {probe.head}: "
            "replicas report not ready",
            "run `m1 db upgrade` or the database-setup deployment before serving",
        )


@live_rule("auth.no_admin", "LHH", "No active admin credential")
def _no_admin(context: Context) -> Iterator[Hit]:
    probe = _database(context)
    if probe.error is None and probe.missing_file is None and probe.admins == 0:
        yield Hit(
            "M1_DATABASE_URL",
            "the database holds no active admin credential: nobody can revoke tokens over HTTP",
            "create one: m1 keys create NAME --role admin",
        )


# -- Redis -----------------------------------------------------------------------------------


@dataclass
class RedisProbe:
    error: str | None = None
    info: dict[str, Any] = field(default_factory=dict)


def _probe_redis(context: Context) -> RedisProbe | None:
    url = context.settings.redis_url
    if url is None:
        return None
    probe = RedisProbe()
    client = None
    try:
        client = redis.Redis.from_url(
            url, socket_timeout=context.timeout_s, socket_connect_timeout=context.timeout_s
        )
        probe.info = {**client.info("server"), **client.info("memory")}
    except (redis.RedisError, OSError, ValueError) as error:
        probe.error = _error_text(error)
    finally:
        if client is not None:
            client.close()
    for key in ("redis_version", "maxmemory", "maxmemory_policy"):
        if key in probe.info:
            context.facts[f"redis_{key.removeprefix('redis_')}"] = str(probe.info[key])
    return probe


def _redis(context: Context) -> RedisProbe | None:
    return context.memo("redis", lambda: _probe_redis(context))


def _redis_where(context: Context) -> str:
    return redact_url(context.settings.redis_url or "")


@live_rule("redis.unreachable", "MHH", "The configured Redis does not answer")
def _redis_unreachable(context: Context) -> Iterator[Hit]:
    probe = _redis(context)
    if probe is not None and probe.error is not None:
        yield Hit(
            "M1_REDIS_URL",
            f"{_redis_where(context)} did not answer within {context.timeout_s:g} s: {probe.error}",
            "check the host, port, password and TLS (rediss://) of M1_REDIS_URL",
        )


def _version(text: str) -> tuple[int, ...]:
    parts = []
    for part in text.split(".")[:3]:
        digits = "".join(ch for ch in part if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


@live_rule("redis.version", "HHH", "Redis older than M1 needs")
def _redis_version(context: Context) -> Iterator[Hit]:
    probe = _redis(context)
    if probe is None or probe.error is not None or "redis_version" not in probe.info:
        return
    version = str(probe.info["redis_version"])
    if _version(version) < _REDIS_MIN_VERSION:
        need = ".".join(map(str, _REDIS_MIN_VERSION))
        yield Hit(
            "M1_REDIS_URL",
            f"Redis {version} lacks XAUTOCLAIM (needs {need} or later): forwarded events of a "
            "dead replica are never taken over",
            f"upgrade Redis to {need} or later (7.x recommended)",
        )


def _policy(context: Context) -> str | None:
    probe = _redis(context)
    if probe is None or probe.error is not None:
        return None
    value = probe.info.get("maxmemory_policy")
    return None if value is None else str(value)


@live_rule("redis.eviction", "MHH", "Redis may evict any key, including M1's streams")
def _eviction(context: Context) -> Iterator[Hit]:
    policy = _policy(context)
    if policy is not None and policy.startswith("allkeys-"):
        yield Hit(
            "M1_REDIS_URL",
            f"maxmemory-policy is {policy}: under memory pressure Redis drops the shared event "
            "stream and forwarded batches, not only cache entries",
            "set maxmemory-policy volatile-lru (only keys with a TTL go) or noeviction, or give "
            "M1 a Redis of its own",
        )


@live_rule("redis.eviction_volatile", "LMM", "Redis may evict M1's rate-limit windows")
def _eviction_volatile(context: Context) -> Iterator[Hit]:
    policy = _policy(context)
    if policy is not None and policy.startswith("volatile-"):
        yield Hit(
            "M1_REDIS_URL",
            f"maxmemory-policy is {policy}: under memory pressure cache entries and rate-limit "
            "windows (keys with a TTL) go, so limits briefly reset",
            "size maxmemory so eviction stays rare, or use noeviction (the cache then falls "
            "back to memory when Redis is full)",
        )


@live_rule("redis.maxmemory", "-LM", "Redis memory is unbounded")
def _maxmemory(context: Context) -> Iterator[Hit]:
    probe = _redis(context)
    if probe is None or probe.error is not None:
        return
    if str(probe.info.get("maxmemory", "")) == "0":
        yield Hit(
            "M1_REDIS_URL",
            "maxmemory is 0: Redis grows until the machine runs out of memory",
            "set maxmemory to what the machine can spare (and a volatile-* or noeviction policy)",
        )


# -- HTTP services ---------------------------------------------------------------------------


def _get(context: Context, url: str, headers: dict[str, str] | None = None) -> int | str:
    """The status of ``GET url``, or why there was none."""
    try:
        with httpx.Client(timeout=context.timeout_s, headers=headers or {}) as client:
            return client.get(url).status_code
    except httpx.HTTPError as error:
        return _error_text(error)


def _prefect_url(context: Context) -> str:
    return (prefect_api_url_from_environment() or context.settings.prefect_api_url).rstrip("/")


@live_rule("prefect.unreachable", "LHH", "The Prefect API does not answer")
def _prefect(context: Context) -> Iterator[Hit]:
    url = _prefect_url(context)
    status = context.memo("prefect", lambda: _get(context, f"{url}/health"))
    context.facts["prefect_api"] = redact_url(url)
    if status != 200:
        yield Hit(
            "M1_PREFECT_PORT",
            f"GET {redact_url(url)}/health answered {status}: no health checks, self-heals or "
            "scheduled flows run",
            "start the Prefect server (`m1 up`), or set PREFECT_API_URL to the one in use",
        )


def _api_url(context: Context) -> str:
    return context.settings.client_api_url


@live_rule("monitoring.unreachable", "LHH", "M1's API does not answer its liveness probe")
def _monitoring(context: Context) -> Iterator[Hit]:
    url = _api_url(context)
    status = context.memo("api_live", lambda: _get(context, f"{url}/health/live"))
    context.facts["api_url"] = redact_url(url)
    if status != 200:
        yield Hit(
            "M1_API_PUBLIC_URL",
            f"GET {redact_url(url)}/health/live answered {status}: load balancer and monitoring "
            "probes would fail",
            "start the API (`m1 up`), or set M1_API_PUBLIC_URL (or M1_API_URL) to where it answers",
        )


@live_rule("monitoring.metrics", "LMM", "Prometheus cannot read M1's /metrics")
def _metrics(context: Context) -> Iterator[Hit]:
    url = _api_url(context)
    if context.memo("api_live", lambda: _get(context, f"{url}/health/live")) != 200:
        return  # monitoring.unreachable says it
    key = context.settings.api.key
    headers = {"Authorization": f"Bearer {key.get_secret_value()}"} if key else None
    status = _get(context, f"{url}/metrics", headers)
    if status != 200:
        hint = (
            "give the scraper a viewer key (or set M1_METRICS_PUBLIC=true on a private network)"
            if status in (401, 403)
            else "check the API's log for /metrics"
        )
        yield Hit(
            "M1_API_KEY" if status in (401, 403) else "M1_API_PUBLIC_URL",
            f"GET {redact_url(url)}/metrics answered {status}"
            + (" with M1_API_KEY" if key else " without a key"),
            hint,
        )
