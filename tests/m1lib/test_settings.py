from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr

from m1lib.errors import SettingsError
from m1lib.settings import (
    Environment,
    Settings,
    iter_setting_docs,
    load_settings,
    masked_values,
    redact_url,
)

# The names deployment files, runbooks and operators rely on (docs/contracts.md).
DOCUMENTED_NAMES = [
    "M1_ENV",
    "M1_DATA_DIR",
    "M1_DATABASE_URL",
    "M1_REDIS_URL",
    "M1_API_HOST",
    "M1_API_PORT",
    "M1_PREFECT_PORT",
    "M1_LOG_LEVEL",
    "M1_LOG_FORMAT",
    "M1_CORS_ORIGINS",
    "M1_TLS_CERT_FILE",
    "M1_TLS_KEY_FILE",
    "M1_TOKEN_TTL_S",
    "M1_TOKEN_LEEWAY_S",
    "M1_JWT_ALGORITHM",
    "M1_JWT_SECRET",
    "M1_REVOCATION_ENABLED",
    "M1_REVOCATION_RESYNC_S",
    "M1_REVOCATION_MAX_STALENESS_S",
    "M1_REVOCATION_FAIL_OPEN",
    "M1_RAW_RETENTION",
    "M1_HEALTH_PERIOD_S",
    "M1_HEALING_THRESHOLD",
    "M1_STREAM_TICK_MS",
    "M1_STREAM_WINDOW_S",
    "M1_STREAM_MAX_CLIENTS",
    "M1_STREAM_CLIENT_QUEUE",
    "M1_STREAM_HEARTBEAT_S",
    "M1_STREAM_ALERT_BUFFER",
    "M1_STREAM_RETRY_MS",
    "M1_METRICS_PUBLIC",
    "M1_RATELIMIT_INGEST_PER_MIN",
    "M1_EVENTS_INGEST_MAX_BYTES",
    "M1_EVENTS_INGEST_MAX_EVENTS",
]
SAMPLE_VALUES = {
    "M1_ENV": ("staging", lambda s: s.env is Environment.STAGING),
    "M1_DATA_DIR": ("/srv/m1", lambda s: s.data_dir == Path("/srv/m1")),
    "M1_DATABASE_URL": ("postgresql://u:pw@db/m1", lambda s: s.database_url.endswith("@db/m1")),
    "M1_REDIS_URL": ("redis://cache:6379/0", lambda s: s.redis_url == "redis://cache:6379/0"),
    "M1_API_HOST": ("0.0.0.0", lambda s: s.api.host == "0.0.0.0"),  # noqa: S104
    "M1_API_PORT": ("9001", lambda s: s.api.port == 9001),
    "M1_PREFECT_PORT": ("4300", lambda s: s.prefect.port == 4300),
    "M1_LOG_LEVEL": ("DEBUG", lambda s: s.log.level.value == "DEBUG"),
    "M1_LOG_FORMAT": ("json", lambda s: s.log.format.value == "json"),
    "M1_CORS_ORIGINS": (
        "https://a.example, https://b.example",
        lambda s: s.cors.origins == ["https://a.example", "https://b.example"],
    ),
    "M1_TLS_CERT_FILE": ("/tls/cert.pem", lambda s: s.tls.cert_file == Path("/tls/cert.pem")),
    "M1_TLS_KEY_FILE": ("/tls/key.pem", lambda s: s.tls.key_file == Path("/tls/key.pem")),
    "M1_TOKEN_TTL_S": ("120", lambda s: s.token.ttl_s == 120),
    "M1_TOKEN_LEEWAY_S": ("2", lambda s: s.token.leeway_s == 2),
    "M1_JWT_ALGORITHM": ("RS256", lambda s: s.jwt.algorithm == "RS256"),
    "M1_JWT_SECRET": ("s" * 40, lambda s: s.jwt.secret.get_secret_value() == "s" * 40),
    "M1_REVOCATION_ENABLED": ("false", lambda s: s.revocation.enabled is False),
    "M1_REVOCATION_RESYNC_S": ("0.25", lambda s: s.revocation.resync_s == 0.25),
    "M1_REVOCATION_MAX_STALENESS_S": ("3", lambda s: s.revocation.max_staleness_s == 3),
    "M1_REVOCATION_FAIL_OPEN": ("true", lambda s: s.revocation.fail_open is True),
    "M1_RAW_RETENTION": ("6h", lambda s: s.raw.retention == timedelta(hours=6)),
    "M1_HEALTH_PERIOD_S": ("15", lambda s: s.health.period_s == 15),
    "M1_HEALING_THRESHOLD": ("5", lambda s: s.healing.threshold == 5),
    "M1_STREAM_TICK_MS": ("250", lambda s: s.stream.tick_ms == 250),
    "M1_STREAM_WINDOW_S": ("30", lambda s: s.stream.window_s == 30),
    "M1_STREAM_MAX_CLIENTS": ("10", lambda s: s.stream.max_clients == 10),
    "M1_STREAM_CLIENT_QUEUE": ("8", lambda s: s.stream.client_queue == 8),
    "M1_STREAM_HEARTBEAT_S": ("5", lambda s: s.stream.heartbeat_s == 5),
    "M1_STREAM_ALERT_BUFFER": ("50", lambda s: s.stream.alert_buffer == 50),
    "M1_STREAM_RETRY_MS": ("1000", lambda s: s.stream.retry_ms == 1000),
    "M1_METRICS_PUBLIC": ("true", lambda s: s.metrics.public is True),
    "M1_RATELIMIT_INGEST_PER_MIN": ("30", lambda s: s.ratelimit.ingest_per_min == 30),
    "M1_EVENTS_INGEST_MAX_BYTES": ("2048", lambda s: s.events.ingest_max_bytes == 2048),
    "M1_EVENTS_INGEST_MAX_EVENTS": ("7", lambda s: s.events.ingest_max_events == 7),
}


def test_settings_defaults_are_the_embedded_defaults() -> None:
    settings = Settings(_env_file=None)
    assert settings.env is Environment.DEVELOPMENT
    assert settings.api.host == "127.0.0.1"
    assert settings.api.port == 8000
    assert settings.prefect.port == 4200
    assert settings.redis_url is None
    assert settings.database_url.startswith("sqlite:///")
    assert settings.database_url.endswith("m1.db")
    assert settings.revocation.resync_s == 1.0
    assert settings.revocation.max_staleness_s == 10.0
    assert settings.health.period_s == 60
    assert settings.healing.threshold == 3
    assert settings.raw.retention == timedelta(hours=24)
    assert settings.jwt.secret is None  # no built-in secret: generated into the data dir instead


def test_every_documented_name_is_in_the_schema() -> None:
    names = {doc.name for doc in iter_setting_docs()}
    assert set(DOCUMENTED_NAMES) <= names


@pytest.mark.parametrize("name", DOCUMENTED_NAMES)
def test_documented_variable_sets_its_field(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    value, check = SAMPLE_VALUES[name]
    monkeypatch.setenv(name, value)
    if name == "M1_TLS_CERT_FILE":
        monkeypatch.setenv("M1_TLS_KEY_FILE", "/tls/key.pem")
    if name == "M1_TLS_KEY_FILE":
        monkeypatch.setenv("M1_TLS_CERT_FILE", "/tls/cert.pem")
    assert check(load_settings(_env_file=None))


def test_constructor_values_beat_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("M1_API_PORT", "9001")
    assert Settings(api={"port": 9100}, _env_file=None).api.port == 9100


def test_dotenv_file_is_read(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("M1_HEALTH_PERIOD_S=7\n")
    assert Settings(_env_file=env_file).health.period_s == 7


@pytest.mark.parametrize(
    ("name", "value", "problem"),
    [
        ("M1_API_PORT", "eighty", "valid integer"),
        ("M1_API_PORT", "70000", "less than or equal to 65535"),
        ("M1_REVOCATION_RESYNC_S", "-1", "greater than 0"),
        ("M1_ENV", "prod", "'development', 'staging' or 'production'"),
        ("M1_RAW_RETENTION", "a day", "not a duration"),
        ("M1_JWT_ALGORITHM", "none", "match pattern"),
        ("M1_REVOCATION_ENABLED", "maybe", "valid boolean"),
    ],
)
def test_invalid_value_is_rejected_naming_the_variable(
    name: str, value: str, problem: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as raised:
        load_settings(_env_file=None)
    message = str(raised.value)
    assert name in message
    assert problem in message


def test_short_secret_fails_in_production_and_warns_in_development() -> None:
    with pytest.raises(SettingsError, match="M1_JWT_SECRET: shorter than 32 bytes"):
        load_settings(env="production", jwt={"secret": "short"}, _env_file=None)
    with pytest.warns(UserWarning, match="M1_JWT_SECRET"):
        load_settings(env="development", jwt={"secret": "short"}, _env_file=None)


def test_tls_needs_both_files() -> None:
    with pytest.raises(SettingsError, match="M1_TLS_CERT_FILE and M1_TLS_KEY_FILE"):
        load_settings(tls={"cert_file": "/tls/cert.pem"}, _env_file=None)


def test_wildcard_cors_origin_is_refused_in_production() -> None:
    with pytest.raises(SettingsError, match="M1_CORS_ORIGINS"):
        load_settings(
            env="production", cors={"origins": "*"}, jwt={"secret": "x" * 40}, _env_file=None
        )


def test_secrets_are_masked_in_repr_show_and_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    secret, password = "topsecret-" + "q" * 30, "dbpassw0rd"
    settings = Settings(
        jwt={"secret": secret},
        database={"url": f"postgresql://m1:{password}@db:5432/m1"},
        redis={"url": f"redis://:{password}@cache:6379/0"},
        _env_file=None,
    )
    shown = "\n".join(f"{k}={v}" for k, v in masked_values(settings).items())
    for text in (repr(settings), str(settings), shown, settings.model_dump_json()):
        assert secret not in text
        assert password not in text
    assert isinstance(settings.jwt.secret, SecretStr)
    monkeypatch.setenv("M1_JWT_SECRET", secret)
    monkeypatch.setenv("M1_API_PORT", "bad")
    with pytest.raises(SettingsError) as raised:
        load_settings(_env_file=None)
    assert secret not in str(raised.value)


def test_redact_url_hides_password_only() -> None:
    assert redact_url("postgresql://m1:pw@db:5432/m1") == "postgresql://m1:***@db:5432/m1"
    assert redact_url("sqlite:////tmp/m1.db") == "sqlite:////tmp/m1.db"


def test_every_setting_has_a_description_and_an_m1_name() -> None:
    for doc in iter_setting_docs():
        assert re.fullmatch(r"M1_[A-Z0-9_]+", doc.name)
        assert doc.description, doc.name
