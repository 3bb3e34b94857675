"""The configuration validator: every rule has a failing case, a good configuration passes, secrets
never appear in any output, a dry run never fails."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib

from m1lib import auth
from m1lib.db import migrate
from m1lib.db.session import Database
from m1lib.ops.config_rules.base import Context, Profile
from m1lib.ops.config_rules.live import RedisProbe
from m1lib.ops.config_rules.schema import VARIABLES, settings_from_raw
from m1lib.ops.config_validator import (
    RULES,
    ConfigReport,
    Severity,
    live_findings,
    static_findings,
    validate_config,
)
from m1lib.settings import Settings
from tests.fake_http import FakeHttp, Routes, fake_http_servers
from tests.m1lib.ops.certs import make_cert
from tests.services import OwnRedis, free_port

JWT = "J" + secrets.token_urlsafe(40)  # recognisable, strong
DB_PASSWORD = "dbPW-" + secrets.token_hex(8)
REDIS_PASSWORD = "rdPW-" + secrets.token_hex(8)
API_KEY = "m1_" + secrets.token_hex(16)
WEBHOOK_TOKEN = "hook-" + secrets.token_hex(8)
ALL_SECRETS = (JWT, DB_PASSWORD, REDIS_PASSWORD, API_KEY, WEBHOOK_TOKEN)


def good_production(data_dir: Path) -> dict[str, str]:
    """A production configuration no static rule objects to."""
    return {
        "M1_ENV": "production",
        "M1_DATA_DIR": str(data_dir),
        "M1_DATABASE_URL": f"postgresql://m1:{DB_PASSWORD}@db.internal:5432/m1?sslmode=verify-full",
        "M1_REDIS_URL": f"rediss://:{REDIS_PASSWORD}@redis.internal:6380/0",
        "M1_JWT_SECRET": JWT,
        "M1_API_KEY": API_KEY,
        "M1_TRUSTED_PROXIES": "10.0.0.0/8",
        "M1_CORS_ORIGINS": "https://m1.example.com",
        "M1_ALERT_WEBHOOK_URL": f"https://hooks.example.com/services/{WEBHOOK_TOKEN}",
        "M1_API_PUBLIC_URL": "https://m1.example.com",
    }


@dataclass
class Kit:
    """What a case may need: a directory, PostgreSQL, Redis, fake HTTP servers."""

    tmp: Path
    request: pytest.FixtureRequest
    http: Callable[[Routes], FakeHttp]
    cleanups: list[Callable[[], None]] = field(default_factory=list)

    def pg(self, *, migrated: bool = False) -> str:
        url: str = self.request.getfixturevalue("fresh_pg_url")
        if migrated:
            db = Database(Settings(database={"url": url}, data_dir=self.tmp, _env_file=None))
            migrate.upgrade(db)
            db.dispose()
        return url

    def redis(self, **config: str) -> str:
        server = OwnRedis(self.tmp / f"redis-{len(self.cleanups)}")
        server.workdir.mkdir()
        server.start()
        self.cleanups.append(server.stop)
        client = redis_lib.Redis.from_url(server.url)
        for name, value in config.items():
            client.config_set(name, value)
        client.close()
        return server.url


@pytest.fixture
def kit(
    tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Kit]:
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    servers = fake_http_servers()
    made = Kit(tmp_path, request, next(servers))
    yield made
    for cleanup in made.cleanups:
        cleanup()
    next(servers, None)


def live_base(kit: Kit) -> dict[str, str]:
    """A production configuration on loopback services: nothing slow to resolve or connect."""
    values = good_production(kit.tmp)
    values["M1_DATABASE_URL"] = f"postgresql://u:{DB_PASSWORD}@127.0.0.1:{free_port()}/m1"
    values["M1_REDIS_URL"] = f"redis://:{REDIS_PASSWORD}@127.0.0.1:{free_port()}/0"
    values["M1_PREFECT_PORT"] = str(free_port())
    values["M1_API_URL"] = f"http://127.0.0.1:{free_port()}"
    return values


def _tls(kit: Kit, **cert: Any) -> dict[str, str]:
    cert_file, key_file = make_cert(kit.tmp / "tls", **cert)
    return {"M1_TLS_CERT_FILE": str(cert_file), "M1_TLS_KEY_FILE": str(key_file)}


def _garbage_cert(kit: Kit) -> dict[str, str]:
    values = _tls(kit)
    Path(values["M1_TLS_CERT_FILE"]).write_text("not a certificate")
    return values


def _generated(kit: Kit) -> dict[str, str]:
    (kit.tmp / "generated.json").write_text(json.dumps({"admin_key": {"generated_at": "x"}}))
    return {}


def _api(kit: Kit, metrics: int) -> dict[str, str]:
    server = kit.http({"/health/live": (200, {}), "/metrics": (metrics, {})})
    return {"M1_API_URL": server.url}


# rule -> (layer is live, overrides of the good configuration; None removes a variable)
Overrides = Callable[[Kit], dict[str, str | None]]
STATIC_CASES: dict[str, Overrides] = {
    "schema.invalid": lambda k: {"M1_API_PORT": "eighty"},
    "schema.unknown": lambda k: {"M1_REDIS_URI": "redis://x"},
    "revocation.staleness": lambda k: {"M1_REVOCATION_RESYNC_S": "20"},
    "health.bounds": lambda k: {"M1_HEALTH_LAG_DEGRADED_S": "50"},
    "tls.pair": lambda k: {"M1_TLS_CERT_FILE": _tls(k)["M1_TLS_CERT_FILE"]},
    "jwt.key_missing": lambda k: {"M1_JWT_ALGORITHM": "RS256"},
    "files.missing": lambda k: {"M1_POLICY_TOOLS_FILE": str(k.tmp / "no-tools.toml")},
    "url.database": lambda k: {"M1_DATABASE_URL": f"mysql://m1:{DB_PASSWORD}@db/m1"},
    "url.redis": lambda k: {"M1_REDIS_URL": f"http://:{REDIS_PASSWORD}@redis.internal"},
    "url.format": lambda k: {"M1_API_URL": "ftp://files.example.com"},
    "url.insecure": lambda k: {"M1_ALERT_WEBHOOK_URL": f"http://hooks.example.com/{WEBHOOK_TOKEN}"},
    "cors.wildcard": lambda k: {"M1_CORS_ORIGINS": "*"},
    "cors.origin": lambda k: {"M1_CORS_ORIGINS": "https://m1.example.com/"},
    "token.leeway": lambda k: {"M1_TOKEN_TTL_S": "10", "M1_TOKEN_LEEWAY_S": "10"},
    "token.ttl_long": lambda k: {"M1_TOKEN_TTL_S": "7200"},
    "health.timeout": lambda k: {"M1_HEALTH_PERIOD_S": "2", "M1_HEALTH_CHECK_TIMEOUT_S": "2"},
    "retention.order": lambda k: {"M1_ROLLUP_RETENTION_1M": "120d"},
    "proxies.too_broad": lambda k: {"M1_TRUSTED_PROXIES": "10.0.0.0/8,0.0.0.0/0"},
    "jwt.secret_weak": lambda k: {"M1_JWT_SECRET": "ab" * 20},
    "jwt.keys_unusable": lambda k: {"M1_JWT_VERIFY_KEYS": f"old={WEBHOOK_TOKEN}"},  # too short
    "jwt.secret_generated": lambda k: {"M1_JWT_SECRET": None},
    "auth.admin_generated": _generated,
    "env.mismatch": lambda k: {"M1_ENV": "staging"},
    "database.sqlite": lambda k: {"M1_DATABASE_URL": None},
    "redis.missing": lambda k: {"M1_REDIS_URL": None},
    "revocation.disabled": lambda k: {"M1_REVOCATION_ENABLED": "false"},
    "revocation.fail_open": lambda k: {"M1_REVOCATION_FAIL_OPEN": "true"},
    "tls.missing": lambda k: {"M1_TRUSTED_PROXIES": None},
    "ratelimit.off": lambda k: {"M1_RATELIMIT_LOGIN_PER_MIN": "100000"},
    "database.sslmode": lambda k: {
        "M1_DATABASE_URL": f"postgresql://m1:{DB_PASSWORD}@db.internal/m1?sslmode=prefer"
    },
    "redis.tls": lambda k: {"M1_REDIS_URL": f"redis://:{REDIS_PASSWORD}@redis.internal:6379/0"},
    "log.debug": lambda k: {"M1_LOG_LEVEL": "DEBUG"},
    "metrics.public": lambda k: {"M1_METRICS_PUBLIC": "true"},
    "alert.webhook_missing": lambda k: {"M1_ALERT_WEBHOOK_URL": None},
    "data_dir.relative": lambda k: {"M1_DATA_DIR": ".m1"},
}
LIVE_CASES: dict[str, Overrides] = {
    "database.unreachable": lambda k: {},
    "database.migrations": lambda k: {"M1_DATABASE_URL": k.pg()},
    "auth.no_admin": lambda k: {"M1_DATABASE_URL": k.pg(migrated=True)},
    "redis.unreachable": lambda k: {},
    "redis.eviction": lambda k: {"M1_REDIS_URL": k.redis(**{"maxmemory-policy": "allkeys-lru"})},
    "redis.eviction_volatile": lambda k: {
        "M1_REDIS_URL": k.redis(**{"maxmemory-policy": "volatile-ttl"})
    },
    "redis.maxmemory": lambda k: {"M1_REDIS_URL": k.redis(maxmemory="0")},
    "prefect.unreachable": lambda k: {},
    "monitoring.unreachable": lambda k: {},
    "monitoring.metrics": lambda k: _api(k, 401),
    "tls.unreadable": _garbage_cert,
    "tls.expired": lambda k: _tls(k, not_before_days=-30, not_after_days=-1),
    "tls.expiring": lambda k: _tls(k, not_after_days=3),
    "tls.key_mismatch": lambda k: _tls(k, other_key=True),
    "tls.hostname": lambda k: _tls(k, hosts=("other.example.com",)),
}
INJECTED_CASES = {"redis.version"}  # a real old Redis is not at hand: its probe is injected


def _apply(base: dict[str, str], overrides: dict[str, str | None]) -> dict[str, str]:
    values = dict(base)
    for name, value in overrides.items():
        if value is None:
            values.pop(name, None)
        else:
            values[name] = value
    return values


def test_every_rule_has_a_failing_case() -> None:
    assert set(STATIC_CASES) | set(LIVE_CASES) | INJECTED_CASES == set(RULES)
    assert len(RULES) >= 40


def test_every_variable_is_validated_against_the_schema() -> None:
    _, hits, unknown = settings_from_raw({})
    assert hits == []
    assert unknown == []
    assert len(VARIABLES) >= 40
    names = {doc for doc in VARIABLES}
    invalid = {name: "not valid ~ \x01" for name in names}
    _, hits, _ = settings_from_raw(invalid)
    refused = {hit.variable for hit in hits}
    free_text = {name for name, doc in VARIABLES.items() if doc.type in ("text", "secret", "path")}
    free_text.add("M1_CORS_ORIGINS")  # a list of text: its format is the cors.origin rule's
    # every variable with a type, range or format refuses a nonsense value, naming itself
    assert refused | free_text == names
    assert all(hit.variable in hit.remediation for hit in hits)


def test_a_good_production_configuration_has_no_static_finding(tmp_path: Path) -> None:
    report = validate_config(good_production(tmp_path), live=False)
    assert report.profile is Profile.PRODUCTION
    assert report.findings == ()
    assert report.verdict(strict=True).passed


@pytest.mark.parametrize("rule", sorted(STATIC_CASES))
def test_static_rule_fails_its_bad_case(rule: str, tmp_path: Path, kit: Kit) -> None:
    values = _apply(good_production(tmp_path), STATIC_CASES[rule](kit))
    report = validate_config(values, profile="production", live=False)
    found = [finding for finding in report.findings if finding.rule == rule]
    assert found, report.to_text()
    assert found[0].severity is RULES[rule].severity_in(Profile.PRODUCTION)
    assert found[0].variable.startswith("M1_")
    assert found[0].problem
    assert found[0].remediation
    _assert_no_secret(report)


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.parametrize("rule", sorted(LIVE_CASES))
def test_live_rule_fails_its_bad_case(rule: str, kit: Kit) -> None:
    values = _apply(live_base(kit), LIVE_CASES[rule](kit))
    report = validate_config(values, profile="production", timeout_s=2.0)
    found = [finding for finding in report.findings if finding.rule == rule]
    assert found, report.to_text()
    assert found[0].severity is RULES[rule].severity_in(Profile.PRODUCTION)
    _assert_no_secret(report)


def test_redis_older_than_6_2_is_high(tmp_path: Path) -> None:
    settings, _, _ = settings_from_raw(good_production(tmp_path))
    context = Context(settings, Profile.PRODUCTION)
    context.memo("redis", lambda: RedisProbe(info={"redis_version": "6.0.16"}))
    found = list(RULES["redis.version"].run(context))
    assert [(f.rule, f.severity) for f in found] == [("redis.version", Severity.HIGH)]
    context = Context(settings, Profile.PRODUCTION)
    context.memo("redis", lambda: RedisProbe(info={"redis_version": "7.2.4"}))
    assert list(RULES["redis.version"].run(context)) == []


@pytest.mark.postgres
def test_a_good_production_deployment_passes_static_and_live(kit: Kit) -> None:
    db_url = kit.pg(migrated=True)
    db = Database(Settings(database={"url": db_url}, data_dir=kit.tmp, _env_file=None))
    auth.create_credential(db, "ops", auth.Role.ADMIN, created_by="test")
    db.dispose()
    prefect = kit.http({"/api/health": (200, True)})
    api = kit.http({"/health/live": (200, {}), "/metrics": (200, {})})
    values = {
        **good_production(kit.tmp),
        **_tls(kit),
        "M1_DATABASE_URL": db_url,
        "M1_REDIS_URL": kit.redis(maxmemory="64mb", **{"maxmemory-policy": "noeviction"}),
        "M1_PREFECT_HOST": "127.0.0.1",
        "M1_PREFECT_PORT": str(prefect.server_address[1]),
        "M1_API_URL": api.url,
    }
    report = validate_config(values, timeout_s=2.0)
    assert report.findings == (), report.to_text()
    assert report.exit_code(strict=True) == 0
    assert report.facts["redis_maxmemory_policy"] == "noeviction"
    assert report.facts["database_revision"] == report.facts["database_head"]
    assert "tls_not_after" in report.facts
    assert api.requests.count("/metrics") == 1


def test_the_local_profile_has_no_tls_or_encryption_rules(tmp_path: Path) -> None:
    values = {"M1_DATA_DIR": str(tmp_path), "M1_REDIS_URL": "redis://10.1.2.3:6379/0"}
    report = validate_config(values, live=False)
    assert report.profile is Profile.LOCAL
    assert report.findings == ()
    production = validate_config(values, profile=Profile.PRODUCTION, live=False)
    assert {"tls.missing", "redis.tls", "database.sqlite"} <= {f.rule for f in production.findings}


def _worst(tmp_path: Path) -> dict[str, str]:
    """Everything wrong at once, secrets included."""
    values = good_production(tmp_path)
    values.update(
        {
            "M1_DATABASE_URL": f"postgresql://m1:{DB_PASSWORD}@127.0.0.1:{free_port()}/m1",
            "M1_REDIS_URL": f"redis://:{REDIS_PASSWORD}@127.0.0.1:{free_port()}/0",
            "M1_REVOCATION_FAIL_OPEN": "true",
            "M1_CORS_ORIGINS": "*",
            "M1_API_PORT": "-1",
            "M1_JWT_VERIFY_KEYS": f"old={WEBHOOK_TOKEN}",
            "M1_API_URL": f"http://127.0.0.1:{free_port()}",
            "M1_PREFECT_PORT": str(free_port()),
            "M1_ALERT_WEBHOOK_URL": f"http://hooks.example.com/{WEBHOOK_TOKEN}",
        }
    )
    return values


def _assert_no_secret(report: ConfigReport) -> None:
    outputs = [
        report.to_text(),
        json.dumps(report.to_json()),
        json.dumps(report.table()),
        report.to_markdown(),
        repr(report),
    ]
    for output in outputs:
        for secret in ALL_SECRETS:
            assert secret not in output


def test_secrets_never_appear_in_any_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    values = _worst(tmp_path)
    values["M1_JWT_SECRET"] = JWT[:20]  # too short: a finding about the secret itself
    values["M1_ALERT_WEBHOOK_URL"] = f"ftp://{WEBHOOK_TOKEN}"  # a bad URL is reported too
    report = validate_config(values, timeout_s=1.0)
    rules = {finding.rule for finding in report.findings}
    assert {"jwt.keys_unusable", "database.unreachable", "redis.unreachable", "url.format"} <= rules
    _assert_no_secret(report)
    for secret in (JWT[:20], DB_PASSWORD, REDIS_PASSWORD, WEBHOOK_TOKEN):
        assert secret not in report.to_text()


def test_an_invalid_secret_value_is_not_echoed(tmp_path: Path) -> None:
    report = validate_config({"M1_DATA_DIR": str(tmp_path), "M1_JWT_VERIFY_KEYS": JWT}, live=False)
    assert JWT not in report.to_text()


@pytest.mark.parametrize("strict", [True, False])
def test_a_dry_run_never_fails(
    strict: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    report = validate_config(_worst(tmp_path), timeout_s=1.0)
    assert report.counts()[Severity.CRITICAL] > 0
    verdict = report.verdict(strict=strict, dry_run=True)
    assert verdict.passed
    assert verdict.exit_code == 0
    assert verdict.mode == "dry-run"
    assert "would fail" in verdict.summary
    assert not report.verdict(strict=strict).passed


def test_strict_fails_on_high_and_lenient_only_on_critical(tmp_path: Path) -> None:
    values = _apply(good_production(tmp_path), {"M1_TRUSTED_PROXIES": None})  # tls.missing: high
    report = validate_config(values, live=False)
    assert [f.severity for f in report.findings] == [Severity.HIGH]
    assert report.exit_code(strict=True) == 1
    assert report.exit_code(strict=False) == 0


def test_findings_come_all_at_once_worst_first(tmp_path: Path) -> None:
    report = validate_config(_worst(tmp_path), live=False)
    ranks = [finding.severity.rank for finding in report.findings]
    assert ranks == sorted(ranks)
    assert len({finding.rule for finding in report.findings}) >= 5
    assert report.to_json()["verdict"]["exitCode"] == 1
    assert report.table()[0].keys() == {"severity", "rule", "variable", "problem", "remediation"}


def test_static_and_live_layers_are_callable_apart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    settings = Settings(
        data_dir=tmp_path,
        revocation={"fail_open": True},
        api={"url": f"http://127.0.0.1:{free_port()}"},
        prefect={"port": free_port()},
        _env_file=None,
    )
    static = static_findings(settings, "production")
    assert "revocation.fail_open" in {f.rule for f in static}
    facts: dict[str, str] = {}
    live = live_findings(settings, Profile.LOCAL, timeout_s=1.0, facts=facts)
    assert {f.rule for f in live} >= {"prefect.unreachable", "monitoring.unreachable"}
    assert all(RULES[f.rule].layer.value == "live" for f in live)
    assert "database.migrations" in {f.rule for f in live}  # the SQLite file is not created
    assert not (tmp_path / "m1.db").exists()  # the validator changes nothing


def test_the_environment_and_its_env_file_are_read_raw(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env_file = tmp_path / ".env.staging"
    env_file.write_text("M1_ENV=staging\nM1_API_PORT=notaport\nM1_LOG_LEVEL=INFO\n")
    monkeypatch.setenv("M1_LOG_LEVEL", "DEBUG")  # the environment beats the file
    monkeypatch.setenv("M1_DATA_DIR", str(tmp_path))
    report = validate_config(env_file=env_file, live=False)
    assert report.profile is Profile.STAGING
    rules = {(f.rule, f.variable) for f in report.findings}
    assert ("schema.invalid", "M1_API_PORT") in rules
    assert ("log.debug", "M1_LOG_LEVEL") in rules
