"""The production-validation suite: its parts, and broken deployments each caught by the right
scenario (wrong database password, Redis stopped, expired certificate, no admin credential).

The suite against a live deployment is in tests/e2e/test_production_validation.py.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import SecretStr, ValidationError

from m1lib.db import migrate
from m1lib.db.session import Database
from m1lib.errors import SettingsError
from m1lib.ops.config_rules.base import Finding, Severity
from m1lib.ops.validation import (
    config_scenarios,
    database_scenarios,
    redis_scenarios,
)
from m1lib.ops.validation.scenario import PROBE_TOOL, Outcome, Scenario, Status
from m1lib.ops.validation.slo import load_slo
from m1lib.ops.validation.suite import GROUPS, SCENARIOS, SuiteReport, run_suite
from m1lib.ops.validation.target import Credentials, Profile, Target, with_password
from m1lib.settings import Settings
from tests.conftest import OwnPostgres
from tests.services import OwnRedis
from tests.validation_reports import make_report

MakeSettings = Callable[..., Settings]


def only(*ids: str) -> list[Scenario]:
    chosen = [s for s in SCENARIOS if s.id in ids]
    assert len(chosen) == len(ids), ids
    return chosen


def statuses(report: SuiteReport) -> dict[str, Status]:
    return {scenario_id: r.outcome.status for scenario_id, r in report.by_id().items()}


# -- the registry, the SLO file, the target ------------------------------------------------------


def test_the_suite_has_at_least_25_scenarios_in_the_issues_groups_with_unique_ids() -> None:
    counts = {group: sum(1 for s in SCENARIOS if s.group == group) for group in GROUPS}
    assert counts == {
        "config": 8,
        "database": 5,
        "redis": 5,
        "api": 4,
        "security": 4,
        "performance": 3,
    }
    assert len({s.id for s in SCENARIOS}) == len(SCENARIOS) >= 25
    assert all(s.id.startswith(f"{s.group}.") for s in SCENARIOS)


def test_the_shipped_slo_file_loads(make_settings: MakeSettings) -> None:
    slo = load_slo(make_settings())
    assert slo.api.stream_delivery_ms == 1000
    assert slo.source.endswith("slo.yaml")


def test_an_slo_file_with_an_unknown_key_is_refused_naming_it(
    make_settings: MakeSettings, tmp_path: Path
) -> None:
    shipped = load_slo(make_settings())
    document = shipped.model_dump(exclude={"source"})
    document["database"]["select_p95_msec"] = 5
    path = tmp_path / "slo.yaml"
    import yaml

    path.write_text(yaml.safe_dump(document))
    with pytest.raises(SettingsError, match=r"M1_SLO_FILE .*database\.select_p95_msec"):
        load_slo(make_settings(slo={"file": path}))


def test_a_target_url_holding_a_password_is_refused() -> None:
    with pytest.raises(ValidationError, match="holds a password"):
        Target(database_url="postgresql://m1:secret@db/m1")


def test_the_password_joins_the_url_only_at_connect_and_never_the_report(
    make_settings: MakeSettings,
) -> None:
    url = "postgresql://m1@db.internal:5432/m1"
    assert (
        with_password(url, SecretStr("p@ss/w")) == "postgresql://m1:p%40ss%2Fw@db.internal:5432/m1"
    )
    shown = Target(database_url=url).resolved(make_settings()).shown()
    assert shown["databaseUrl"] == url
    configured = make_settings(database={"url": "postgresql://m1:hunter2@db/m1"})
    assert "hunter2" not in str(Target().resolved(configured).shown())


def test_credentials_come_from_the_environment_else_the_secret_block(
    make_settings: MakeSettings,
) -> None:
    block = {"admin_key": "from-block", "database_password": "pw"}
    credentials = Credentials.from_settings(make_settings(), block)
    assert credentials.admin_key == SecretStr("from-block")
    assert credentials.database_password == SecretStr("pw")
    settings = make_settings(validation={"admin_key": "from-env"}, api={"key": "service"})
    assert Credentials.from_settings(settings, block).admin_key == SecretStr("from-env")
    assert Credentials.from_settings(make_settings(api={"key": "k"})).admin_key == SecretStr("k")


def test_credentials_fall_back_to_the_generated_admin_key(
    make_settings: MakeSettings, tmp_data_dir: Path
) -> None:
    (tmp_data_dir / "admin_key").write_text("m1_generated\n")
    assert Credentials.from_settings(make_settings()).admin_key == SecretStr("m1_generated")


# -- grading and the report ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"), [(10.0, Status.PASS), (85.0, Status.WARN), (101.0, Status.FAIL)]
)
def test_a_figure_is_graded_against_its_target_and_the_warn_fraction(
    value: float, expected: Status
) -> None:
    outcome = Outcome.graded(value, 100.0, 0.8, unit="ms", what="p99")
    assert outcome.status is expected
    assert outcome.threshold == "<= 100 ms"


def test_exit_status_is_a_gate_on_fail_and_strict_counts_warn() -> None:
    assert make_report(Status.PASS, Status.WARN).exit_status() == 0
    assert make_report(Status.PASS, Status.WARN).exit_status(strict=True) == 1
    failed = make_report(Status.PASS, Status.FAIL)
    assert failed.exit_status() == 1
    assert failed.to_json()["verdict"] == "fail"
    assert failed.to_json()["counts"] == {"pass": 1, "warn": 0, "fail": 1}
    assert "| api.s1 | fail |" in failed.markdown()


# -- configuration: adapters over the validator ------------------------------------------------


def test_the_validators_findings_grade_the_scenario_of_their_variable(
    make_settings: MakeSettings,
) -> None:
    """The test settings (SQLite, no Redis, the generated secret, plain HTTP): fine for `local`,
    and in production each problem fails the scenario of its variable, the others pass."""
    config = config_scenarios.SCENARIOS[:7]
    local = statuses(run_suite(Target(), Credentials(), make_settings(), scenarios=config))
    assert set(local.values()) == {Status.PASS}, local
    target = Target(profile=Profile.PRODUCTION)
    report = run_suite(target, Credentials(), make_settings(), scenarios=config)
    assert statuses(report) == {
        "config.database": Status.FAIL,  # SQLite (critical)
        "config.redis": Status.FAIL,  # no Redis (high)
        "config.secrets": Status.FAIL,  # the secret `m1 up` generated
        "config.revocation": Status.PASS,
        "config.cors": Status.PASS,
        "config.tls": Status.FAIL,  # plain HTTP and no trusted proxy
        "config.rate_limits": Status.PASS,
    }
    assert "M1_DATABASE_URL" in report.by_id()["config.database"].outcome.message


def test_a_medium_finding_warns_its_scenario() -> None:
    medium = Finding(
        "redis.eviction_volatile", Severity.MEDIUM, "M1_REDIS_URL", "volatile-lru", "-"
    )
    context = types.SimpleNamespace(notes={"config_findings": [medium]})
    outcome = config_scenarios._grade_group(context, ("M1_REDIS_",), "t")  # type: ignore[arg-type]
    assert outcome.status is Status.WARN
    assert "volatile-lru (medium)" in outcome.message


# -- broken deployments, each caught by the right scenario -------------------------------------


def test_a_wrong_database_password_fails_database_connect(
    own_postgres: OwnPostgres, make_settings: MakeSettings
) -> None:
    target = Target(database_url=own_postgres.url())
    wrong = Credentials(database_password=SecretStr("not-the-password"))
    report = run_suite(target, wrong, make_settings(), scenarios=database_scenarios.SCENARIOS)
    connect = report.by_id()["database.connect"].outcome
    assert connect.status is Status.FAIL
    assert "not-the-password" not in str(report.to_json())
    right = Credentials(database_password=SecretStr(own_postgres.PASSWORD))
    found = statuses(
        run_suite(
            target,
            right,
            make_settings(),
            scenarios=only("database.connect", "database.round_trip", "database.pool"),
        )
    )
    assert set(found.values()) == {Status.PASS}, found


def test_a_stopped_redis_fails_redis_ping(own_redis: OwnRedis, make_settings: MakeSettings) -> None:
    target = Target(redis_url=own_redis.url, redis_prefix="m1test:validation")
    assert statuses(
        run_suite(target, Credentials(), make_settings(), scenarios=redis_scenarios.SCENARIOS)
    ) == dict.fromkeys((s.id for s in redis_scenarios.SCENARIOS), Status.PASS)
    own_redis.stop()
    found = statuses(
        run_suite(target, Credentials(), make_settings(), scenarios=redis_scenarios.SCENARIOS)
    )
    assert found["redis.ping"] is Status.FAIL


def _certificate(path: Path, not_after: datetime, key_path: Path | None = None) -> Path:
    key = ec.generate_private_key(ec.SECP256R1())
    if key_path is not None:
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "m1.test")])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_after - timedelta(days=90))
        .not_valid_after(not_after)
        .sign(key, hashes.SHA256())
    )
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return path


@pytest.mark.parametrize(
    ("days_left", "expected"), [(-1, Status.FAIL), (3, Status.WARN), (200, Status.PASS)]
)
def test_an_expired_certificate_fails_security_tls(
    tmp_path: Path, make_settings: MakeSettings, days_left: int, expected: Status
) -> None:
    cert = _certificate(tmp_path / "cert.pem", datetime.now(UTC) + timedelta(days=days_left))
    target = Target(api_url="https://m1.test", tls_cert_file=cert)
    report = run_suite(target, Credentials(), make_settings(), scenarios=only("security.tls"))
    assert report.by_id()["security.tls"].outcome.status is expected


def test_an_https_api_serving_an_expired_certificate_fails_security_tls(
    tmp_path: Path, make_settings: MakeSettings
) -> None:
    """No certificate file given: the scenario reads the one the API's https port serves."""
    import socket
    import ssl
    import threading

    cert = _certificate(
        tmp_path / "cert.pem", datetime.now(UTC) - timedelta(days=1), tmp_path / "key.pem"
    )
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert, tmp_path / "key.pem")
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve_one() -> None:
        connection, _ = listener.accept()
        try:
            with server_context.wrap_socket(connection, server_side=True):
                pass
        except (OSError, ssl.SSLError):
            pass  # the client hangs up after reading the certificate

    thread = threading.Thread(target=serve_one, daemon=True)
    thread.start()
    try:
        target = Target(api_url=f"https://127.0.0.1:{port}")
        report = run_suite(target, Credentials(), make_settings(), scenarios=only("security.tls"))
    finally:
        thread.join(10)
        listener.close()
    outcome = report.by_id()["security.tls"].outcome
    assert outcome.status is Status.FAIL
    assert "served by the API" in outcome.observed


def test_plain_http_fails_security_tls_in_production_only(make_settings: MakeSettings) -> None:
    for profile, expected in [(Profile.LOCAL, Status.PASS), (Profile.PRODUCTION, Status.FAIL)]:
        target = Target(profile=profile, api_url="http://m1.test")
        report = run_suite(target, Credentials(), make_settings(), scenarios=only("security.tls"))
        assert report.by_id()["security.tls"].outcome.status is expected


def test_no_admin_credential_fails_config_admin_credential(
    fresh_pg_url: str, make_settings: MakeSettings
) -> None:
    settings = make_settings(database={"url": fresh_pg_url})
    with Database(settings) as db:
        migrate.upgrade(db)
    report = run_suite(
        Target(database_url=fresh_pg_url),
        Credentials(),
        settings,
        scenarios=only("config.admin_credential", "database.migrations"),
    )
    assert statuses(report) == {
        "config.admin_credential": Status.FAIL,
        "database.migrations": Status.PASS,
    }
    assert "m1 keys create" in report.by_id()["config.admin_credential"].outcome.message


def test_the_security_module_names_its_probe_tool_in_the_registry() -> None:
    from m1lib.policy import load_tool_registry

    assert PROBE_TOOL in load_tool_registry()


# -- the command ---------------------------------------------------------------------------------


def test_cli_refuses_a_password_in_a_flag_naming_it(capsys: pytest.CaptureFixture[str]) -> None:
    from m1lib.cli import main

    code = main(["validate", "production", "--database-url", "postgresql://u:pw@db/m1"])
    assert code == 2
    err = capsys.readouterr().err
    assert "--database-url" in err
    assert "pw@" not in err


def test_cli_exits_1_when_a_scenario_fails_and_prints_json(
    capsys: pytest.CaptureFixture[str], task_settings: Path
) -> None:
    """An API nobody serves: its scenarios fail, so the gate closes (exit 1)."""
    import json

    from m1lib.cli import main
    from tests.services import free_port

    api = f"http://127.0.0.1:{free_port()}"
    code = main(["validate", "production", "--api-url", api, "--json"])
    answer = json.loads(capsys.readouterr().out)
    assert code == 1
    assert answer["verdict"] == "fail"
    failed = {row["id"] for row in answer["scenarios"] if row["status"] == "fail"}
    assert {"api.live", "api.ready"} <= failed
