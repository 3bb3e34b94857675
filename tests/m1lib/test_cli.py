"""The `m1` command in-process through ``cli.main``: each verb's output, exit codes and errors.

Exit codes: 0 ok; 1 a negative answer (not revoked, inactive, behind, no such credential); 2 bad
arguments or an M1 error (one line on stderr, no traceback); 130 interrupted.
"""

from __future__ import annotations

import io
import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from m1lib import auth, cli
from m1lib.cli import main
from m1lib.db import migrate
from m1lib.db.session import Database
from m1lib.settings import PROJECT_ROOT, iter_setting_docs, load_settings
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


def m1(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``m1 ARGV`` in-process: exit code, stdout, stderr (argparse's exits included)."""
    try:
        code = cli.main(list(argv))
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


# -- arguments and errors --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        ((), "the following arguments are required: verb"),
        (("launch",), "invalid choice: 'launch'"),
        (("keys", "rename"), "invalid choice: 'rename'"),
        (("tokens", "issue", "web_search"), "the following arguments are required: --subject"),
        (("tokens", "issue", "t", "--subject", "a", "--scope", "admin"), "invalid choice: 'admin'"),
        (("tokens", "list", "--limit", "many"), "invalid int value: 'many'"),
        (("db", "upgrade", "head", "extra"), "unrecognized arguments: extra"),
    ],
)
def test_bad_arguments_exit_2_with_the_usage_and_what_is_wrong(
    capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], says: str
) -> None:
    code, out, err = m1(capsys, *argv)
    assert (code, out) == (2, "")
    assert err.startswith("usage: m1")
    assert says in err


def test_an_invalid_configuration_exits_2_naming_the_variable(
    configured: TokenCodec, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("M1_REVOCATION_RESYNC_S", "5")
    monkeypatch.setenv("M1_REVOCATION_MAX_STALENESS_S", "5")
    code, out, err = m1(capsys, "config", "show")
    assert (code, out) == (2, "")
    assert err.startswith("m1: invalid configuration:")
    assert "M1_REVOCATION_MAX_STALENESS_S" in err
    assert "Traceback" not in err


def test_an_m1_error_is_one_line_on_stderr_and_exit_2(
    configured: TokenCodec, capsys: pytest.CaptureFixture[str]
) -> None:
    assert m1(capsys, "tokens", "revoke-all", "--reason", "r") == (
        2,
        "",
        "m1: tool_name: a rule needs a tool, a subject or both; "
        "allowed: tool_name, subject, both\n",
    )
    code, out, err = m1(capsys, "keys", "create", "Not A Name")
    assert (code, out) == (2, "")
    assert err.startswith("m1: name: 'Not A Name' is not a credential name")


def test_an_interrupt_exits_130(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted() -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "load_settings", interrupted)
    assert m1(capsys, "config", "show") == (130, "", "")


# -- config ----------------------------------------------------------------------------------


def test_config_show_masks_secrets(capsys, monkeypatch) -> None:
    monkeypatch.setenv("M1_JWT_SECRET", "v" * 40)
    monkeypatch.setenv("M1_DATABASE_URL", "postgresql://m1:pw12345@db/m1")
    assert main(["config", "show"]) == 0
    out = capsys.readouterr().out
    assert "v" * 40 not in out
    assert "pw12345" not in out
    assert "M1_JWT_SECRET=**********" in out


def test_config_show_prints_every_variable_once(
    configured: TokenCodec, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = m1(capsys, "config", "show")
    assert code == 0
    names = [line.partition("=")[0] for line in out.splitlines()]
    assert names == [doc.name for doc in iter_setting_docs()]
    assert f"M1_JWT_SECRET={SECRET}" not in out


def test_config_docs_check_names_the_stale_files_then_writing_fixes_them(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    shutil.copy(PROJECT_ROOT / "README.md", tmp_path / "README.md")
    (tmp_path / ".env.example").write_text("# old\n")
    root = str(tmp_path)
    code, out, err = m1(capsys, "config", "docs", "--check", "--root", root)
    assert (code, out) == (1, "")
    assert err == "stale: .env.example (run `m1 config docs`)\n"
    assert (tmp_path / ".env.example").read_text() == "# old\n"  # --check writes nothing
    code, out, _ = m1(capsys, "config", "docs", "--root", root)
    assert (code, out) == (0, "wrote the README configuration table and .env.example\n")
    assert m1(capsys, "config", "docs", "--check", "--root", root) == (0, "up to date\n", "")


# -- db --------------------------------------------------------------------------------------


def test_db_current_upgrade_and_downgrade(
    tmp_data_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("M1_DATA_DIR", str(tmp_data_dir))
    head = migrate.head_revision()
    behind = (1, f"database at nothing; code expects {head} (behind)\n", "")
    assert m1(capsys, "db", "current") == behind
    assert m1(capsys, "db", "upgrade") == (0, f"database at revision {head}\n", "")
    assert m1(capsys, "db", "current") == (
        0,
        f"database at {head}; code expects {head} (current)\n",
        "",
    )
    assert m1(capsys, "db", "downgrade") == (
        2,
        "",
        "m1 db downgrade: give a revision (e.g. base)\n",
    )
    assert m1(capsys, "db", "downgrade", "base") == (0, "database at revision base\n", "")
    assert m1(capsys, "db", "current") == behind


# -- keys ------------------------------------------------------------------------------------


def test_keys_create_list_revoke(
    configured: TokenCodec, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = m1(capsys, "keys", "create", "ops-admin", "--role", "admin")
    assert code == 0
    first, key = out.splitlines()
    assert first == "created admin credential 'ops-admin'; its key (shown once):"
    assert m1(capsys, "keys", "create", "ops-viewer")[0] == 0
    db = Database(load_settings())
    try:
        stored = {row.name: row for row in auth.list_credentials(db)}
    finally:
        db.dispose()
    assert auth.key_matches(key, stored["ops-admin"].key_hash)
    assert stored["ops-viewer"].role == "viewer"
    assert stored["ops-admin"].created_by.startswith("cli:")
    code, out, err = m1(capsys, "keys", "revoke", "ops-viewer")
    assert (code, err) == (0, "")
    assert out.startswith("revoked 'ops-viewer': replicas refuse it within ")
    assert m1(capsys, "keys", "revoke", "ops-viewer") == (
        1,
        "",
        "no active credential named 'ops-viewer'\n",
    )
    code, out, _ = m1(capsys, "keys", "list")
    lines = out.splitlines()
    assert code == 0
    assert [line.split()[:3] for line in lines] == [
        ["ops-admin", "admin", "active"],
        ["ops-viewer", "viewer", "revoked"],
    ]
    assert key not in out
    assert all("created by cli:" in line for line in lines)


def test_keys_create_takes_every_role_and_only_those(
    configured: TokenCodec, capsys: pytest.CaptureFixture[str]
) -> None:
    assert tuple(role.value for role in auth.Role) == cli.ROLE_CHOICES
    code, out, _ = m1(capsys, "keys", "create", "flow-runner", "--role", "agent")
    assert (code, out.splitlines()[0]) == (
        0,
        "created agent credential 'flow-runner'; its key (shown once):",
    )
    code, _, err = m1(capsys, "keys", "create", "someone", "--role", "operator")
    assert code == 2  # argparse: an unknown choice
    assert "invalid choice: 'operator'" in err


def test_keys_create_and_revoke_need_a_name(
    configured: TokenCodec, capsys: pytest.CaptureFixture[str]
) -> None:
    assert m1(capsys, "keys", "create") == (2, "", "m1 keys create: give a NAME\n")
    assert m1(capsys, "keys", "revoke") == (2, "", "m1 keys revoke: give a NAME\n")


# -- tokens: revoke, revoke-all, list, status, purge -----------------------------------------


def test_tokens_revoke_is_idempotent_and_status_tells_who_revoked(
    configured: TokenCodec, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("getpass.getuser", lambda: "alice")
    code, out, _ = run(capsys, "revoke", "jti-1", "--reason", "leaked", "--tool", "web_search")
    assert code == 0
    assert out.startswith("jti-1: revoked at ")
    monkeypatch.setattr("getpass.getuser", lambda: "bob")
    code, out, _ = run(capsys, "revoke", "jti-1", "--reason", "again")
    assert code == 0
    assert out.startswith("jti-1: already revoked by cli:alice at ")
    code, out, _ = run(capsys, "status", "jti-1")
    assert code == 0
    assert out.startswith("jti-1: revoked at ")
    assert "by cli:alice (tool web_search): leaked; record kept until " in out
    assert run(capsys, "status", "jti-2") == (1, "jti-2: not revoked\n", "")


def test_the_actor_is_cli_unknown_when_the_user_cannot_be_named(
    configured: TokenCodec, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def nobody() -> str:
        raise KeyError("no passwd entry")

    monkeypatch.setattr("getpass.getuser", nobody)
    assert run(capsys, "revoke", "jti-9")[0] == 0
    assert "by cli:unknown " in run(capsys, "status", "jti-9")[1]


def test_tokens_list_pages_newest_first_and_filters_by_tool(
    configured: TokenCodec, capsys: pytest.CaptureFixture[str]
) -> None:
    for n, tool in enumerate(["web_search", "send_email", "web_search"]):
        assert run(capsys, "revoke", f"jti-{n}", "--tool", tool, "--reason", f"r{n}")[0] == 0
    code, out, _ = run(capsys, "list", "--limit", "2")
    lines = out.splitlines()
    assert code == 0
    assert [line.split()[0] for line in lines[:2]] == ["jti-2", "jti-1"]
    assert lines[2].startswith("more: m1 tokens list --cursor ")
    cursor = lines[2].rsplit(" ", 1)[1]
    code, out, _ = run(capsys, "list", "--limit", "2", "--cursor", cursor)
    assert [line.split()[0] for line in out.splitlines()] == ["jti-0"]
    code, out, _ = run(capsys, "list", "--tool", "web_search")
    assert [line.split()[0] for line in out.splitlines()] == ["jti-2", "jti-0"]


def test_tokens_revoke_all_makes_a_rule_that_list_rules_shows(
    configured: TokenCodec, capsys: pytest.CaptureFixture[str]
) -> None:
    # a minute ago: a rule cut before every live token's lifetime has expired and is not listed
    cut = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
    before = cut.isoformat()
    code, out, _ = run(
        capsys, "revoke-all", "--tool", "send_email", "--issued-before", before, "--reason", "r"
    )
    assert code == 0
    assert out == (
        f"rule 1: tokens for tool send_email, subject (any) issued before {before} are denied\n"
    )
    code, out, _ = run(capsys, "list", "--rules")
    assert code == 0
    assert out.startswith(
        f"rule 1      tool=send_email subject=* before={cut:%Y-%m-%d %H:%M:%S}Z by cli:"
    )
    assert out.endswith(": r\n")


def test_tokens_revoke_all_refuses_a_time_that_is_not_iso_8601(
    configured: TokenCodec, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, "revoke-all", "--subject", "a", "--issued-before", "yesterday") == (
        2,
        "",
        "--issued-before: 'yesterday' is not an ISO 8601 time\n",
    )
    assert run(capsys, "list", "--rules") == (0, "", "")


def test_tokens_purge_dry_run_counts_and_purge_deletes(
    configured: TokenCodec, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, "revoke", "jti-live")[0] == 0
    code, out, _ = run(capsys, "purge", "--dry-run")
    assert code == 0
    assert out.startswith("would purge 0 token records and 0 rules expired before ")
    code, out, _ = run(capsys, "purge", "--older-than-hours", "0")
    assert code == 0
    assert out.startswith("purged 0 token records and 0 rules expired before ")
    assert run(capsys, "status", "jti-live")[0] == 0  # not expired: kept


def test_tokens_issue_takes_a_lifetime_and_the_default_scope_is_read(
    configured: TokenCodec, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "issue", "tool_registry_list", "--subject", "a1", "--ttl-s", "60")
    assert code == 0
    claims = configured.decode(out.strip())
    assert claims["exp"] - claims["iat"] == 60
    assert claims["scope"] == "read"


def test_tokens_issue_for_an_unregistered_tool_exits_2_naming_the_tools(
    configured: TokenCodec, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "issue", "web_search", "--subject", "a1")
    assert (code, out) == (2, "")
    assert err.startswith("m1: tool_name: 'web_search' is not a registered tool; allowed: ")
    assert "log_agent_run" in err
