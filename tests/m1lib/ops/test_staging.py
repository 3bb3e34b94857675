"""Staging setup: twice on the real PostgreSQL and Redis (the second run changes nothing), the
env file's rules, dry runs, failures, the validator seam and the API check."""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, table
from sqlalchemy.engine import make_url

from m1lib import auth
from m1lib.db import migrate
from m1lib.db.session import Database
from m1lib.errors import InputError
from m1lib.ops import staging
from m1lib.ops.staging import Outcome, StagingPlan, StepResult, plan_staging, setup_staging
from m1lib.settings import Settings
from tests.conftest import pg_database_exists

QUIET = {Outcome.UNCHANGED, Outcome.VERIFIED, Outcome.SKIPPED}


def _plan(
    database_url: str, redis_url: str, prefix: str, env_file: Path, **more: Any
) -> StagingPlan:
    return plan_staging(
        database_url=database_url,
        redis_url=redis_url,
        redis_prefix=prefix,
        env_file=env_file,
        **more,
    )


def _passing_validator(settings: Settings) -> StepResult:
    assert settings.env.value == "staging"
    return StepResult("validator", Outcome.VERIFIED, "passed")


def _row_counts(database_url: str) -> dict[str, int]:
    with Database(Settings(_env_file=None), url=database_url) as db, db.connect() as connection:
        return {
            name: connection.execute(select(func.count()).select_from(table(name))).scalar_one()
            for name in migrate.table_names(db)
        }


def test_setup_twice_on_real_postgres_and_redis_changes_nothing_the_second_time(
    unborn_pg_url: str, shared_redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    env_file = tmp_path / ".env.staging"
    plan = _plan(unborn_pg_url, shared_redis_url, redis_prefix, env_file)
    keys: list[str] = []

    def keep(name: str, key: str) -> str:
        keys.append(key)
        return "kept by the test"

    first = setup_staging(plan, deliver_key=keep, validator=_passing_validator)
    assert first.outcomes() == {
        "database": "created",
        "migrations": "created",
        "redis": "verified",
        "env_file": "created",
        "tool_registry": "verified",
        "admin_credential": "created",
        "validator": "verified",
    }
    print(f"nothing to validated staging: {first.seconds:.2f} s")
    assert len(keys) == 1
    assert keys[0].startswith(auth.KEY_PREFIX)
    assert all(keys[0] not in step.detail for step in first.steps)
    assert env_file.stat().st_mode & 0o777 == 0o600
    values = staging.read_env_values(env_file)
    assert values["M1_ENV"] == "staging"
    assert make_url(values["M1_DATABASE_URL"]).database == plan.database_name
    assert len(values["M1_JWT_SECRET"]) >= 48
    with Database(Settings(_env_file=None), url=unborn_pg_url) as db:
        store = auth.CredentialStore(db, refresh_s=60)
        found = store.authenticate(keys[0])
        assert found is not None
        assert (found.name, found.role) == ("staging-admin", auth.Role.ADMIN)
    content, mtime = env_file.read_bytes(), env_file.stat().st_mtime_ns
    rows = _row_counts(unborn_pg_url)

    second = setup_staging(plan, deliver_key=keep, validator=_passing_validator)
    assert second.ok
    assert second.changed == []
    assert {step.outcome for step in second.steps} <= QUIET
    assert second.outcomes()["env_file"] == "unchanged"
    assert (env_file.read_bytes(), env_file.stat().st_mtime_ns) == (content, mtime)
    assert _row_counts(unborn_pg_url) == rows
    assert len(keys) == 1  # no second key


def test_dry_run_on_nothing_says_what_it_would_create_and_creates_nothing(
    unborn_pg_url: str, shared_redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    env_file = tmp_path / ".env.staging"
    plan = _plan(unborn_pg_url, shared_redis_url, redis_prefix, env_file)
    result = setup_staging(plan, apply=False, deliver_key=_refuse)
    assert result.dry_run
    assert result.ok
    assert result.outcomes() == {
        "database": "would create",
        "migrations": "would create",
        "redis": "verified",
        "env_file": "would create",
        "tool_registry": "verified",
        "admin_credential": "would create",
        "validator": "skipped",
    }
    assert not pg_database_exists(plan.database_name)
    assert not env_file.exists()


def test_an_env_file_for_another_database_is_refused_and_force_rewrites_it_with_a_new_secret(
    unborn_pg_url: str, shared_redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    env_file = tmp_path / ".env.staging"
    plan = _plan(unborn_pg_url, shared_redis_url, redis_prefix, env_file)
    env_file.write_text(
        staging.env_file_text(
            _plan(
                "postgresql://postgres@127.0.0.1:5432/elsewhere",
                shared_redis_url,
                redis_prefix,
                env_file,
            ),
            "s" * 48,
        )
    )
    env_file.chmod(0o644)
    refused = setup_staging(plan, deliver_key=lambda *_: "", validator=_passing_validator)
    assert refused.outcomes()["env_file"] == "failed"
    assert "M1_DATABASE_URL" in refused.steps[3].detail
    assert "--force" in refused.steps[3].detail
    assert {refused.outcomes()[step] for step in staging.STEPS[4:]} == {"skipped"}
    assert staging.read_env_values(env_file)["M1_JWT_SECRET"] == "s" * 48

    forced = setup_staging(
        _plan(unborn_pg_url, shared_redis_url, redis_prefix, env_file, force=True),
        deliver_key=lambda *_: "",
        validator=_passing_validator,
    )
    assert forced.ok
    assert forced.outcomes()["env_file"] == "updated"
    values = staging.read_env_values(env_file)
    assert values["M1_DATABASE_URL"] == plan.database_url
    assert values["M1_JWT_SECRET"] != "s" * 48
    assert env_file.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == [".env.staging"]  # no spare file left


def test_an_unreachable_redis_fails_its_step_and_skips_the_rest(
    unborn_pg_url: str, tmp_path: Path
) -> None:
    plan = _plan(unborn_pg_url, "redis://127.0.0.1:1/0", "m1", tmp_path / ".env")
    result = setup_staging(plan, deliver_key=_refuse, validator=_passing_validator)
    assert not result.ok
    assert result.outcomes()["redis"] == "failed"
    assert "127.0.0.1:1" in result.steps[2].detail
    assert {result.outcomes()[step] for step in staging.STEPS[3:]} == {"skipped"}
    assert not (tmp_path / ".env").exists()


def test_plan_checks_inputs_and_derives_the_admin_url() -> None:
    plan = plan_staging(
        database_url="postgres://ops@db.internal:5433/m1_staging",
        redis_url="redis://cache:6379/0",
        env_file=".env.staging",
    ).with_password("pw")
    assert plan.database_name == "m1_staging"
    assert plan.database_url == "postgresql+psycopg://ops:pw@db.internal:5433/m1_staging"
    assert plan.admin_url == "postgresql+psycopg://ops:pw@db.internal:5433/postgres"
    assert "pw" not in str(plan.describe())
    cases = [
        ({"database_url": "sqlite:///m1.db"}, "database_url"),
        ({"database_url": "postgresql://h/Bad-Name"}, "database_url"),
        ({"redis_url": "http://cache"}, "redis_url"),
        ({"admin_url": "postgresql://other-host/postgres"}, "admin_url"),
        ({"admin_name": "Admin!"}, "admin_name"),
    ]
    for change, path in cases:
        inputs: dict[str, Any] = {
            "database_url": "postgresql://h/m1",
            "redis_url": "redis://r",
            "env_file": "e",
        } | change
        with pytest.raises(InputError) as caught:
            plan_staging(**inputs)
        assert caught.value.path == path


def test_validator_step_is_lenient_and_names_the_serious_findings(
    monkeypatch: pytest.MonkeyPatch, make_settings: Any
) -> None:
    calls: list[dict[str, Any]] = []
    passed = {"value": False}

    def finding(rule: str, severity: str) -> Any:
        return types.SimpleNamespace(rule=rule, severity=types.SimpleNamespace(value=severity))

    def validate_config(settings: Settings, **options: Any) -> Any:
        calls.append(options)
        findings = [finding("database.unreachable", "critical"), finding("tls.missing", "medium")]
        if passed["value"]:
            findings = [finding("monitoring.unreachable", "high")]

        def verdict(strict: bool = True) -> Any:
            assert strict is False
            summary = "PASS (lenient)" if passed["value"] else "FAIL (lenient)"
            return types.SimpleNamespace(passed=passed["value"], summary=summary)

        return types.SimpleNamespace(findings=findings, verdict=verdict)

    monkeypatch.setattr(staging, "validate_config", validate_config)
    failed = staging.run_validator(make_settings())
    assert calls == [{"profile": "staging", "live": True}]
    assert failed.outcome is Outcome.FAILED
    assert failed.detail == "profile staging: FAIL (lenient); database.unreachable (critical)"
    passed["value"] = True
    ok = staging.run_validator(make_settings())
    assert ok.outcome is Outcome.VERIFIED
    assert ok.detail == "profile staging: PASS (lenient); monitoring.unreachable (high)"


def test_verify_api_needs_live_and_ready() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/health/live":
            return httpx.Response(200, json={"status": "live"})
        return httpx.Response(
            503,
            json={"detail": "not ready: migrations"},
            headers={"content-type": "application/problem+json"},
        )

    with httpx.Client(transport=httpx.MockTransport(answer)) as client:
        result = staging.verify_api("http://api:8000/", client=client)
    assert result.outcome is Outcome.FAILED
    assert result.detail == "http://api:8000: live 200, ready 503 not ready: migrations"
    with httpx.Client(transport=httpx.MockTransport(lambda _: httpx.Response(200))) as client:
        assert staging.verify_api("http://api:8000", client=client).outcome is Outcome.VERIFIED
    unreachable = staging.verify_api("http://127.0.0.1:1", timeout_s=1)
    assert unreachable.outcome is Outcome.FAILED
    assert "ConnectError" in unreachable.detail


def _refuse(_name: str, _key: str) -> str:
    raise AssertionError("no credential may be created here")


def test_cli_writes_a_new_admin_key_to_a_file_when_asked_and_never_prints_it(
    unborn_pg_url: str,
    shared_redis_url: str,
    redis_prefix: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from m1lib.cli import main

    monkeypatch.chdir(tmp_path)
    argv = [
        "staging", "setup",
        "--database-url", unborn_pg_url,
        "--redis-url", shared_redis_url,
        "--redis-prefix", redis_prefix,
        "--env-file", "state/.env",
        "--admin-key-file", "state/admin_key",
    ]  # fmt: skip
    assert main(argv) == 0
    key_file = tmp_path / "state" / "admin_key"
    key = key_file.read_text().strip()
    assert key.startswith(auth.KEY_PREFIX)
    assert key_file.stat().st_mode & 0o777 == 0o600
    first = capsys.readouterr().out
    assert key not in first
    assert "written to state/admin_key (mode 0600)" in first
    assert main(argv) == 0
    assert capsys.readouterr().out.endswith("changed: nothing\n")
    assert key_file.read_text().strip() == key
