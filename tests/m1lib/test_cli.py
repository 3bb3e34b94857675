"""`m1 tokens issue | introspect`: the command line's token verbs, their output byte for byte."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from m1lib import cli
from m1lib.db import migrate
from m1lib.db.session import Database
from m1lib.settings import load_settings
from m1lib.tokens import TokenCodec

SECRET = "c" * 40


@pytest.fixture
def configured(tmp_data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> TokenCodec:
    """An SQLite deployment in a temporary directory, migrated; its token codec."""
    monkeypatch.chdir(tmp_path)  # no developer's .env
    monkeypatch.setenv("M1_DATA_DIR", str(tmp_data_dir))
    monkeypatch.setenv("M1_JWT_SECRET", SECRET)
    settings = load_settings()
    db = Database(settings)
    migrate.upgrade(db)
    db.dispose()
    return TokenCodec.from_settings(settings)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(["tokens", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_issue_prints_a_token_that_introspects_active_with_its_claims(
    configured: TokenCodec, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "issue", "log_agent_run", "--scope", "write", "--subject", "a7")
    assert code == 0
    token = out.strip()
    claims = configured.decode(token)
    assert (claims["sub"], claims["toolName"], claims["scope"]) == ("a7", "log_agent_run", "write")
    code, out, err = run(capsys, "introspect", token)
    assert (code, err) == (0, "")
    assert out == json.dumps({**claims, "active": True}) + "\n"


def test_introspect_reads_the_token_from_stdin(
    configured: TokenCodec, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    token = configured.issue(subject="a", tool_name="log_agent_run", scope="write")
    monkeypatch.setattr("sys.stdin", io.StringIO(token + "\n"))
    code, out, _ = run(capsys, "introspect", "-")
    assert code == 0
    assert json.loads(out)["active"] is True


def test_introspect_an_invalid_token_exits_1_naming_the_reason(
    configured: TokenCodec, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, "introspect", "not-a-token") == (
        1,
        '{"active": false}\n',
        "inactive: malformed\n",
    )


def test_introspect_a_revoked_token_exits_1_naming_revoked(
    configured: TokenCodec, capsys: pytest.CaptureFixture[str]
) -> None:
    token = configured.issue(subject="a", tool_name="log_agent_run", scope="write")
    jti = configured.decode(token)["jti"]
    assert run(capsys, "revoke", jti, "--reason", "leaked")[0] == 0
    assert run(capsys, "introspect", token) == (1, '{"active": false}\n', "inactive: revoked\n")
