"""`m1 up` resolves configuration once and hands it to its children through their environment."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from m1lib.settings import (
    child_environment,
    iter_setting_docs,
    load_settings,
    settings_environment,
)

SECRET = "s" * 40


def test_a_child_elsewhere_reads_what_its_parent_resolved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The parent reads its `.env` and relative paths; a child started with the settings'
    environment in another directory, beside another `.env`, ends up with the same settings."""
    here, elsewhere = tmp_path / "here", tmp_path / "elsewhere"
    here.mkdir()
    elsewhere.mkdir()
    (here / ".env").write_text(f"M1_API_PORT=9100\nM1_JWT_SECRET={SECRET}\n")
    (elsewhere / ".env").write_text("M1_API_PORT=1\nM1_DATA_DIR=/wrong\nM1_JWT_SECRET=\n")
    monkeypatch.chdir(here)
    parent = load_settings(
        data_dir=Path("rel/data"),
        policy={"tools_file": Path("tools.toml")},
        raw={"retention": timedelta(hours=25, seconds=1.5)},
        revocation={"resync_s": 0.25, "max_staleness_s": 7.5},
        cors={"origins": ["https://a.example", "https://b.example"]},
        log={"format": "json"},
        metrics={"public": True},
    )
    environment = settings_environment(parent)
    database_url, prefect_home = parent.database_url, parent.prefect_home  # resolved from here
    assert set(environment) == {doc.name for doc in iter_setting_docs()}

    monkeypatch.chdir(elsewhere)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    child = load_settings()

    assert settings_environment(child) == environment
    assert child.data_dir == here / "rel" / "data"
    assert child.database_url == database_url
    assert child.prefect_home == prefect_home
    assert child.policy.tools_file == here / "tools.toml"
    assert child.api.port == 9100
    assert child.jwt.secret is not None
    assert child.jwt.secret.get_secret_value() == SECRET
    assert child.raw.retention == timedelta(hours=25, seconds=1.5)
    assert child.model_dump(exclude={"data_dir", "policy"}) == parent.model_dump(
        exclude={"data_dir", "policy"}
    )


def test_child_environment_keeps_the_rest_and_adds_what_the_child_must_be_told(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("M1_API_PORT", "1")  # stale: the resolved settings win
    monkeypatch.setenv("SOMETHING_ELSE", "kept")
    settings = load_settings(data_dir=tmp_path, api={"port": 9200}, _env_file=None)
    environment = child_environment(settings, {"PREFECT_HOME": "/p"})
    assert environment["M1_API_PORT"] == "9200"
    assert environment["M1_DATA_DIR"] == str(tmp_path.resolve())
    assert environment["SOMETHING_ELSE"] == "kept"
    assert environment["PREFECT_HOME"] == "/p"
