"""Static rules: the configuration's values and the local files they name, nothing on the network.

Severities per profile are the second argument of each ``static_rule`` (local, staging,
production; ``-``: not applied). What the settings loader itself refuses is critical everywhere:
the process would not start.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

from pydantic import SecretStr

from m1lib.bootstrap import RECORD_FILE
from m1lib.ops.config_rules.base import Context, Hit, Profile, profile_for, static_rule
from m1lib.ops.config_rules.urls import database_url, is_loopback, split
from m1lib.settings import MIN_SECRET_BYTES, LogLevel, redact_url
from m1lib.signing import JWT_SECRET_FILE

_ORIGIN = re.compile(r"^https?://[^/\s:@]+(:\d{1,5})?$")
_STRONG_SSLMODES = frozenset({"require", "verify-ca", "verify-full"})
_MIN_DISTINCT_CHARS = 8
_RATELIMIT_CEILINGS = {  # per minute; above this a limit no longer protects anything
    "read_per_min": 60_000,
    "query_per_min": 60_000,
    "admin_per_min": 60_000,
    "ingest_per_min": 60_000,
    "login_per_min": 600,
}
_GENERATED_RECORD = RECORD_FILE  # what `m1 up` records it generated
_GENERATED_SECRET = JWT_SECRET_FILE  # the signing secret it generates
_LONG_TTL_S = 3600


# -- what the loader refuses: cross-field rules of the models ----------------------------------


@static_rule(
    "revocation.staleness", "CCC", "Revocation staleness bound not above the resync period"
)
def _staleness(context: Context) -> Iterator[Hit]:
    revocation = context.settings.revocation
    if revocation.max_staleness_s <= revocation.resync_s:
        yield Hit(
            "M1_REVOCATION_MAX_STALENESS_S",
            f"{revocation.max_staleness_s:g} s is not above M1_REVOCATION_RESYNC_S "
            f"({revocation.resync_s:g} s): every replica would flap not-ready (the loader refuses it)",
            "set M1_REVOCATION_MAX_STALENESS_S to several resync periods (default 10 s over 1 s)",
        )


@static_rule("health.bounds", "CCC", "A degraded bound above its unhealthy bound")
def _health_bounds(context: Context) -> Iterator[Hit]:
    health = context.settings.health
    for name, unit in (("latency", "_ms"), ("error_rate", ""), ("memory", "_pct"), ("lag", "_s")):
        degraded = getattr(health, f"{name}_degraded{unit}")
        unhealthy = getattr(health, f"{name}_unhealthy{unit}")
        if degraded > unhealthy:
            low = f"M1_HEALTH_{name.upper()}_DEGRADED{unit.upper()}"
            high = f"M1_HEALTH_{name.upper()}_UNHEALTHY{unit.upper()}"
            yield Hit(
                low,
                f"{degraded:g} exceeds {high} ({unhealthy:g}): the warning grade would be "
                "skipped (the loader refuses it)",
                f"set {low} at or below {high}",
            )


@static_rule("tls.pair", "CCC", "A TLS certificate without its key, or a key without certificate")
def _tls_pair(context: Context) -> Iterator[Hit]:
    tls = context.settings.tls
    if (tls.cert_file is None) != (tls.key_file is None):
        missing = "M1_TLS_KEY_FILE" if tls.key_file is None else "M1_TLS_CERT_FILE"
        yield Hit(
            missing,
            "M1_TLS_CERT_FILE and M1_TLS_KEY_FILE must be set together (the loader refuses one alone)",
            f"set {missing}, or unset both to serve plain HTTP behind a TLS-terminating proxy",
        )


@static_rule("jwt.key_missing", "CCC", "Signing algorithm and private key file disagree")
def _jwt_key(context: Context) -> Iterator[Hit]:
    jwt = context.settings.jwt
    if jwt.algorithm == "HS256" and jwt.private_key_file is not None:
        yield Hit(
            "M1_JWT_PRIVATE_KEY_FILE",
            "set while M1_JWT_ALGORITHM is HS256: token signing refuses to start",
            "set M1_JWT_ALGORITHM=RS256 or EdDSA to sign with the key, or unset the key file",
        )
    if jwt.algorithm != "HS256" and jwt.private_key_file is None:
        yield Hit(
            "M1_JWT_PRIVATE_KEY_FILE",
            f"M1_JWT_ALGORITHM is {jwt.algorithm} but no private key file is set: nothing can sign",
            "set M1_JWT_PRIVATE_KEY_FILE to a PEM private key (RSA 2048+ for RS256, Ed25519 for EdDSA)",
        )


@static_rule("files.missing", "CCC", "A configured file that does not exist or cannot be read")
def _files(context: Context) -> Iterator[Hit]:
    settings = context.settings
    named = {
        "M1_ENV_FILE": settings.env_file,
        "M1_TLS_CERT_FILE": settings.tls.cert_file,
        "M1_TLS_KEY_FILE": settings.tls.key_file,
        "M1_JWT_PRIVATE_KEY_FILE": settings.jwt.private_key_file,
        "M1_POLICY_TOOLS_FILE": settings.policy.tools_file,
        "M1_PREFECT_DEPLOYMENTS_FILE": settings.prefect.deployments_file,
    }
    for variable, path in named.items():
        if path is None:
            continue
        if not path.is_file():
            yield Hit(variable, f"{path} is not a file", f"point {variable} at an existing file")
        elif not os.access(path, os.R_OK):
            yield Hit(
                variable,
                f"{path} cannot be read by this user",
                f"give the user running M1 read access to {path}",
            )


@static_rule("url.database", "CCC", "A database URL SQLAlchemy cannot use")
def _database_url(context: Context) -> Iterator[Hit]:
    if context.settings.database.url is None:
        return
    url = database_url(context.settings.database_url)
    if url is None:
        yield Hit(
            "M1_DATABASE_URL",
            "is not a URL SQLAlchemy can read",
            "use postgresql://user:password@host:5432/m1, or unset it for the SQLite default",
        )
    elif url.get_backend_name() not in ("postgresql", "sqlite"):
        yield Hit(
            "M1_DATABASE_URL",
            f"the {url.get_backend_name()!r} database is not supported",
            "use a postgresql:// URL (production) or sqlite:///path (local)",
        )


@static_rule("url.redis", "CCC", "A Redis URL redis-py cannot use")
def _redis_url(context: Context) -> Iterator[Hit]:
    url = context.settings.redis_url
    if url is None:
        return
    parts = split(url)
    if parts is None or parts.scheme not in ("redis", "rediss", "unix"):
        yield Hit(
            "M1_REDIS_URL",
            f"{redact_url(url)!r} is not a redis://, rediss:// or unix:// URL",
            "use rediss://:password@host:6379/0 (TLS) or redis://host:6379/0 on a private network",
        )


def _http_urls(context: Context) -> Iterator[tuple[str, str]]:
    settings = context.settings
    for variable, value in (
        ("M1_API_PUBLIC_URL", settings.api.public_url),
        ("M1_API_URL", settings.api.url),
        ("M1_ALERT_WEBHOOK_URL", settings.alert.webhook_url),
    ):
        text = value.get_secret_value() if isinstance(value, SecretStr) else value
        if text:
            yield variable, text


@static_rule("url.format", "MMM", "An HTTP URL setting that is not http(s)://host")
def _url_format(context: Context) -> Iterator[Hit]:
    for variable, url in _http_urls(context):
        parts = split(url)
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            yield Hit(
                variable,
                f"{_safe_url(variable, url)} is not an http:// or https:// URL with a host",
                f"set {variable} like https://m1.example.com",
            )


@static_rule("url.insecure", "-LM", "An outside URL over plain http://")
def _url_insecure(context: Context) -> Iterator[Hit]:
    for variable, url in _http_urls(context):
        parts = split(url)
        if parts is not None and parts.scheme == "http" and not is_loopback(parts.hostname):
            yield Hit(
                variable,
                f"{_safe_url(variable, url)} is plain http to another host: keys and data travel "
                "unencrypted",
                f"use https:// in {variable}",
            )


def _safe_url(variable: str, url: str) -> str:
    """A URL fit for a finding: the webhook's is a secret (a token may sit anywhere in it)."""
    if variable == "M1_ALERT_WEBHOOK_URL":
        return "the webhook URL"
    return repr(redact_url(url))


@static_rule("cors.wildcard", "HHC", "CORS allows every origin")
def _cors_wildcard(context: Context) -> Iterator[Hit]:
    if "*" in context.settings.cors.origins:
        yield Hit(
            "M1_CORS_ORIGINS",
            "'*' lets any web page call the API from a visitor's browser",
            "list the dashboard's origins, e.g. https://m1.example.com (production refuses '*')",
        )


@static_rule("cors.origin", "MMM", "A CORS origin that is not scheme://host[:port]")
def _cors_origin(context: Context) -> Iterator[Hit]:
    for origin in context.settings.cors.origins:
        if origin != "*" and not _ORIGIN.match(origin):
            yield Hit(
                "M1_CORS_ORIGINS",
                f"{origin[:100]!r} is not an origin: browsers send scheme://host[:port], no path "
                "or trailing slash, so it never matches",
                "write each origin as https://host or https://host:port",
            )


@static_rule("token.leeway", "MMM", "Token clock leeway not below the token lifetime")
def _leeway(context: Context) -> Iterator[Hit]:
    token = context.settings.token
    if token.leeway_s >= token.ttl_s:
        yield Hit(
            "M1_TOKEN_LEEWAY_S",
            f"{token.leeway_s} s is not below M1_TOKEN_TTL_S ({token.ttl_s} s): an expired token "
            "stays valid for longer than it lived",
            "keep M1_TOKEN_LEEWAY_S at a few seconds (default 5)",
        )


@static_rule("token.ttl_long", "-LL", "Capability tokens that live longer than an hour")
def _ttl_long(context: Context) -> Iterator[Hit]:
    ttl = context.settings.token.ttl_s
    if ttl > _LONG_TTL_S:
        yield Hit(
            "M1_TOKEN_TTL_S",
            f"tokens live {ttl} s: a leaked one is usable that long unless revoked",
            "use minutes (default 300 s); agents ask for a new token per task",
        )


@static_rule("health.timeout", "MMM", "A health check may take longer than the health period")
def _health_timeout(context: Context) -> Iterator[Hit]:
    health = context.settings.health
    if health.check_timeout_s >= health.period_s:
        yield Hit(
            "M1_HEALTH_CHECK_TIMEOUT_S",
            f"{health.check_timeout_s:g} s is not below M1_HEALTH_PERIOD_S ({health.period_s} s): "
            "a slow run overlaps the next, which is cancelled",
            "keep M1_HEALTH_CHECK_TIMEOUT_S well below the period (default 2 s of 60 s)",
        )


@static_rule("retention.order", "MMM", "Retentions that contradict each other")
def _retention(context: Context) -> Iterator[Hit]:
    settings = context.settings
    if settings.rollup.retention_1m > settings.rollup.retention_1h:
        yield Hit(
            "M1_ROLLUP_RETENTION_1M",
            "1-minute rollups are kept longer than 1-hour rollups",
            "keep M1_ROLLUP_RETENTION_1M at or below M1_ROLLUP_RETENTION_1H",
        )
    longest = max(
        settings.rollup.retention_1h, settings.rollup.retention_1m, settings.raw.retention
    )
    if settings.query.max_range > longest:
        yield Hit(
            "M1_QUERY_MAX_RANGE",
            f"queries may span {settings.query.max_range}, longer than any data is kept ({longest})",
            "set M1_QUERY_MAX_RANGE to at most M1_ROLLUP_RETENTION_1H",
        )


@static_rule("proxies.too_broad", "MHH", "Trusted proxies that include every address")
def _proxies(context: Context) -> Iterator[Hit]:
    for network in context.settings.trusted_proxies:
        if network.prefixlen == 0:
            yield Hit(
                "M1_TRUSTED_PROXIES",
                f"{network} trusts every peer: any client can name itself in X-Forwarded-For and "
                "escape its rate limit",
                "list only the load balancers' addresses or their private network",
            )


# -- secrets -----------------------------------------------------------------------------------


def _repetitive(secret: str) -> bool:
    """Long enough for the codec but made of few characters: guessable all the same."""
    return len(set(secret)) < _MIN_DISTINCT_CHARS


@static_rule("jwt.secret_weak", "MHC", "A token-signing secret made of few distinct characters")
def _secret_weak(context: Context) -> Iterator[Hit]:
    jwt = context.settings.jwt
    secret = jwt.secret.get_secret_value() if jwt.secret is not None else None
    long_enough = secret is not None and len(secret.encode()) >= MIN_SECRET_BYTES
    if jwt.algorithm == "HS256" and secret and long_enough and _repetitive(secret):
        yield Hit(
            "M1_JWT_SECRET",
            f"the signing secret has only {len(set(secret))} distinct characters: tokens can "
            "be forged by guessing it",
            "generate one: python -c 'import secrets; print(secrets.token_urlsafe(48))'",
        )
    if jwt.verify_keys is not None:
        for number, entry in enumerate(jwt.verify_keys.get_secret_value().split(","), start=1):
            kid, _, value = (part.strip() for part in entry.partition("="))
            secret_entry = len(value.encode()) >= MIN_SECRET_BYTES and not value.startswith("file:")
            if secret_entry and _repetitive(value):
                yield Hit(
                    "M1_JWT_VERIFY_KEYS",
                    f"entry {number} (kid {kid[:64]!r}) is an HS256 secret of few distinct "
                    "characters",
                    "retire the entry, or rotate to a secret of 32 random bytes or more",
                )


_STAND_IN_SECRET = "stand-in secret: only the other keys are judged here"  # noqa: S105


@static_rule("jwt.keys_unusable", "CCC", "Signing or verification keys token signing refuses")
def _keys_unusable(context: Context) -> Iterator[Hit]:
    """What :meth:`TokenCodec.from_settings` refuses (a short secret, a malformed or short
    M1_JWT_VERIFY_KEYS entry, a key file of the wrong kind): every process that signs or
    verifies stops on it. Rules beside this one report a missing secret or key file."""
    from m1lib.errors import M1Error
    from m1lib.tokens import TokenCodec

    settings, jwt = context.settings, context.settings.jwt
    if (jwt.algorithm == "HS256") == (jwt.private_key_file is not None):
        return  # jwt.key_missing
    if jwt.private_key_file is not None and not jwt.private_key_file.is_file():
        return  # files.missing
    if jwt.algorithm == "HS256" and jwt.secret is None:  # jwt.secret_generated's business
        stand_in = jwt.model_copy(update={"secret": SecretStr(_STAND_IN_SECRET * 2)})
        settings = settings.model_copy(update={"jwt": stand_in})
    try:
        TokenCodec.from_settings(settings)
    except M1Error as error:
        text = str(error)
        variable = text.split(":", 1)[0].split(" ", 1)[0]
        yield Hit(
            variable if variable in _JWT_VARIABLES else "M1_JWT_SECRET",
            f"{text} (every process that signs or verifies tokens stops on it)",
            "fix the value named; M1_JWT_* are described in the README's configuration table",
        )


_JWT_VARIABLES = frozenset(
    {"M1_JWT_SECRET", "M1_JWT_VERIFY_KEYS", "M1_JWT_PRIVATE_KEY_FILE", "M1_JWT_KID"}
)


def _generated_record(context: Context) -> dict[str, object]:
    path = context.settings.data_dir / _GENERATED_RECORD
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _generated_secret(context: Context) -> str | None:
    try:
        return (context.settings.data_dir / _GENERATED_SECRET).read_text().strip() or None
    except OSError:
        return None


@static_rule("jwt.secret_generated", "-MC", "The token-signing secret generated for development")
def _secret_generated(context: Context) -> Iterator[Hit]:
    jwt = context.settings.jwt
    if jwt.algorithm != "HS256":
        return
    data_dir = context.settings.data_dir
    if jwt.secret is None:
        yield Hit(
            "M1_JWT_SECRET",
            f"not set: tokens are signed with the secret `m1 up` generates into {data_dir} "
            "(a development convenience, kept on one machine's disk)",
            "set M1_JWT_SECRET from your secret store (32+ random bytes), the same on every replica",
        )
    elif jwt.secret.get_secret_value() == _generated_secret(context):
        yield Hit(
            "M1_JWT_SECRET",
            f"equals the development secret `m1 up` generated into {data_dir / _GENERATED_SECRET}",
            "generate a new secret for this environment and keep it in your secret store",
        )


@static_rule("auth.admin_generated", "-MH", "The admin key generated by `m1 up` for development")
def _admin_generated(context: Context) -> Iterator[Hit]:
    if "admin_key" in _generated_record(context):
        path = context.settings.data_dir / _GENERATED_RECORD
        yield Hit(
            "M1_DATA_DIR",
            f"{path} records that `m1 up` generated the bootstrap admin key here (printed once, "
            "kept in a file beside the data)",
            "create named admin keys (`m1 keys create NAME --role admin`), then "
            "`m1 keys revoke admin` and delete the admin_key file",
        )


# -- posture of a deployment -------------------------------------------------------------------


@static_rule("env.mismatch", "-MH", "M1_ENV does not name the profile being validated")
def _env_mismatch(context: Context) -> Iterator[Hit]:
    own = profile_for(context.settings)
    if own is not context.profile:
        yield Hit(
            "M1_ENV",
            f"M1_ENV is {context.settings.env.value} but this is validated as {context.profile.value}: "
            "the loader's own production safeguards follow M1_ENV",
            f"set M1_ENV={context.profile.value if context.profile is not Profile.LOCAL else 'development'}",
        )


@static_rule("database.sqlite", "-HC", "M1's database is SQLite")
def _sqlite(context: Context) -> Iterator[Hit]:
    url = database_url(context.settings.database_url)
    if url is not None and url.get_backend_name() == "sqlite":
        yield Hit(
            "M1_DATABASE_URL",
            "M1 runs on a SQLite file: one machine, no replicas sharing revocations and audits",
            "set M1_DATABASE_URL=postgresql://user:password@host:5432/m1?sslmode=verify-full",
        )


@static_rule("redis.missing", "-MH", "No Redis configured")
def _redis_missing(context: Context) -> Iterator[Hit]:
    if context.settings.redis_url is None:
        yield Hit(
            "M1_REDIS_URL",
            "no Redis: each replica has its own cache and rate limits, revocations spread only "
            "by database resync, and the live stream shows one replica",
            "set M1_REDIS_URL=rediss://:password@host:6379/0",
        )


@static_rule("revocation.disabled", "LHC", "Tokens are not checked against revocations")
def _revocation_disabled(context: Context) -> Iterator[Hit]:
    if not context.settings.revocation.enabled:
        yield Hit(
            "M1_REVOCATION_ENABLED",
            "revocation is off: a revoked token keeps working until it expires",
            "set M1_REVOCATION_ENABLED=true",
        )


@static_rule("revocation.fail_open", "LHC", "Stale revocation state accepts tokens")
def _fail_open(context: Context) -> Iterator[Hit]:
    if context.settings.revocation.fail_open:
        yield Hit(
            "M1_REVOCATION_FAIL_OPEN",
            "fail-open: a replica cut off from the database accepts tokens it cannot check",
            "set M1_REVOCATION_FAIL_OPEN=false (replicas then deny and report not ready)",
        )


@static_rule("tls.missing", "-MH", "Neither TLS nor a trusted proxy that terminates it")
def _tls_missing(context: Context) -> Iterator[Hit]:
    settings = context.settings
    if not settings.tls_enabled and not settings.trusted_proxies:
        yield Hit(
            "M1_TLS_CERT_FILE",
            "the API serves plain HTTP and no trusted proxy (M1_TRUSTED_PROXIES) is declared to "
            "terminate TLS in front of it",
            "set M1_TLS_CERT_FILE and M1_TLS_KEY_FILE, or M1_TRUSTED_PROXIES to the load "
            "balancer that terminates TLS",
        )


@static_rule("ratelimit.off", "-MH", "A rate limit so high it protects nothing")
def _ratelimit_off(context: Context) -> Iterator[Hit]:
    limits = context.settings.ratelimit
    for field, ceiling in _RATELIMIT_CEILINGS.items():
        value = getattr(limits, field)
        if value > ceiling:
            variable = f"M1_RATELIMIT_{field.upper()}"
            yield Hit(
                variable,
                f"{value} per minute is effectively no limit (over {ceiling})",
                f"set {variable} to what one client may really need (default "
                f"{type(limits).model_fields[field].default})",
            )


@static_rule("database.sslmode", "-MM", "No encryption in transit to PostgreSQL")
def _sslmode(context: Context) -> Iterator[Hit]:
    if context.settings.database.url is None:
        return
    url = database_url(context.settings.database_url)
    if url is None or url.get_backend_name() != "postgresql" or is_loopback(url.host):
        return
    mode = url.query.get("sslmode")
    mode_text = mode if isinstance(mode, str) else None
    if mode_text not in _STRONG_SSLMODES:
        yield Hit(
            "M1_DATABASE_URL",
            f"sslmode is {mode_text or 'not set'} for {url.host}: the connection may be unencrypted",
            "add ?sslmode=verify-full (or require) to M1_DATABASE_URL",
        )


@static_rule("redis.tls", "-MM", "No encryption in transit to Redis")
def _redis_tls(context: Context) -> Iterator[Hit]:
    url = context.settings.redis_url
    parts = split(url) if url else None
    if parts is not None and parts.scheme == "redis" and not is_loopback(parts.hostname):
        yield Hit(
            "M1_REDIS_URL",
            f"redis:// to {parts.hostname} is unencrypted: cached results and the password travel "
            "in clear",
            "use rediss:// (Redis with TLS)",
        )


@static_rule("log.debug", "-LM", "Debug logging")
def _log_debug(context: Context) -> Iterator[Hit]:
    if context.settings.log.level is LogLevel.DEBUG:
        yield Hit(
            "M1_LOG_LEVEL",
            "DEBUG logs every request's details and slows the hot path",
            "set M1_LOG_LEVEL=INFO",
        )


@static_rule("metrics.public", "-LM", "Prometheus metrics served without credentials")
def _metrics_public(context: Context) -> Iterator[Hit]:
    if context.settings.metrics.public:
        yield Hit(
            "M1_METRICS_PUBLIC",
            "/metrics answers anyone: tool names, volumes and replica names leak",
            "set M1_METRICS_PUBLIC=false and give the scraper a viewer key",
        )


@static_rule("alert.webhook_missing", "-LL", "No escalation webhook")
def _webhook_missing(context: Context) -> Iterator[Hit]:
    if context.settings.alert.webhook_url is None:
        yield Hit(
            "M1_ALERT_WEBHOOK_URL",
            "an escalated incident only reaches the log and the dashboard's alerts",
            "set M1_ALERT_WEBHOOK_URL to your paging or chat webhook",
        )


@static_rule("data_dir.relative", "-LL", "A data directory relative to the working directory")
def _data_dir(context: Context) -> Iterator[Hit]:
    data_dir: Path = context.settings.data_dir
    if not data_dir.is_absolute():
        yield Hit(
            "M1_DATA_DIR",
            f"{data_dir} depends on the directory each process starts in",
            "set M1_DATA_DIR to an absolute path",
        )
