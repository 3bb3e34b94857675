"""`m1 validate config` and the global `--env-file`: exit status as a gate, JSON out, env files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from m1lib import cli
from m1lib.settings import get_settings, load_settings, settings_environment


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory (no .env); M1_ENV_FILE restored after the test."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("M1_ENV_FILE", "")  # so what --env-file sets is undone after
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def _staging_file(directory: Path) -> Path:
    path = directory / ".env.staging"
    path.write_text(
        "M1_ENV=staging\n"
        "M1_API_PORT=9123\n"
        f"M1_DATA_DIR={directory / 'staging-data'}\n"
        "M1_REVOCATION_FAIL_OPEN=true\n"
    )
    return path


def test_a_command_reads_the_env_file_it_is_given(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (workdir / ".env").write_text("M1_API_PORT=8111\n")
    path = _staging_file(workdir)
    assert cli.main(["--env-file", str(path), "config", "show"]) == 0
    shown = dict(line.split("=", 1) for line in capsys.readouterr().out.splitlines())
    assert shown["M1_ENV"] == "staging"
    assert shown["M1_API_PORT"] == "9123"  # .env.staging, not ./.env
    assert shown["M1_ENV_FILE"] == str(path.resolve())


def test_children_of_a_command_inherit_its_env_file(workdir: Path) -> None:
    path = _staging_file(workdir)
    cli.build_parser()  # the option exists before any verb
    from m1lib.settings import use_env_file

    use_env_file(path)
    child = settings_environment(load_settings())  # what `m1 up` hands its children
    assert child["M1_ENV_FILE"] == str(path.resolve())
    assert child["M1_API_PORT"] == "9123"


def test_a_missing_env_file_is_an_error_naming_the_variable(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["--env-file", str(workdir / "nope.env"), "config", "show"]) == 2
    assert "M1_ENV_FILE" in capsys.readouterr().err


def test_validate_fails_as_a_gate_and_names_every_problem(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _staging_file(workdir)
    (workdir / "extra.env").write_text(path.read_text() + "M1_API_PORT=0\n")
    code = cli.main(["--env-file", str(workdir / "extra.env"), "validate", "config", "--offline"])
    out = capsys.readouterr().out
    assert code == 1
    assert "profile staging" in out
    assert "revocation.fail_open" in out
    assert "M1_API_PORT" in out  # refused by the schema, reported rather than raised


def test_validate_dry_run_exits_0_and_json_has_the_verdict(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _staging_file(workdir)
    argv = ["--env-file", str(path), "validate", "config", "--offline", "--dry-run", "--json"]
    assert cli.main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["verdict"]["mode"] == "dry-run"
    assert report["verdict"]["passed"] is True
    assert report["counts"]["high"] >= 1


def test_validate_no_strict_passes_a_configuration_with_only_high_findings(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _staging_file(workdir)  # staging: fail-open and SQLite are high, nothing critical
    argv = ["--env-file", str(path), "validate", "config", "--offline"]
    assert cli.main(argv) == 1
    assert "revocation.fail_open" in capsys.readouterr().out
    assert cli.main([*argv, "--no-strict"]) == 0
    assert "PASS (lenient" in capsys.readouterr().out
