"""The library surface of docs/contracts.md: sorted, resolvable, lazy, and working."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import m1lib
from m1lib import process_engine
from m1lib.db import migrate
from m1lib.db.session import Database
from m1lib.metrics import install_default
from m1lib.settings import get_settings
from tests.waiting import wait_for


def test_all_is_sorted_and_every_name_resolves() -> None:
    assert m1lib.__all__ == sorted(m1lib.__all__)
    for name in m1lib.__all__:
        assert callable(getattr(m1lib, name)), name


def test_no_submodule_shares_an_exported_name() -> None:
    """Importing a submodule binds it on the package: m1lib.tool_call would become a module."""
    for name in m1lib.__all__:
        assert importlib.util.find_spec(f"m1lib.{name}") is None, name


def test_unknown_attribute_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        m1lib.nope  # noqa: B018


def test_import_m1lib_loads_nothing_heavy() -> None:
    code = (
        "import sys, m1lib; heavy = [m for m in ('m1lib.metrics', 'm1lib.policy', 'numpy', "
        "'sqlalchemy', 'prefect') if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.fixture
def configured(tmp_data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("M1_DATA_DIR", str(tmp_data_dir))
    monkeypatch.setenv("M1_JWT_SECRET", "k" * 40)
    get_settings.cache_clear()
    db = Database(get_settings())
    migrate.upgrade(db)
    db.dispose()
    yield
    engine = process_engine.install_engine(None)
    if engine is not None:
        engine.revocations.close()
    install_default(None)
    get_settings.cache_clear()


def test_default_calls_issue_verify_revoke_and_record(configured: None) -> None:
    token = m1lib.issue_token("log_agent_run", "write", subject="agent-7")
    decision = m1lib.verify(token, "log_agent_run", "write", subject="agent-7")
    assert decision.allowed, decision.reason
    jti = str(decision.claims["jti"])  # type: ignore[index]
    assert not m1lib.is_revoked(jti)
    m1lib.revoke_token(jti, "leaked", "cli:test")
    assert m1lib.is_revoked(jti)
    assert m1lib.verify(token, "log_agent_run", "write").reason == "revoked"

    m1lib.record_event(
        "tool_executions", toolName="web", scope="read", success=True, durationMs=5.0
    )

    def counted(query: dict[str, object]) -> dict[object, int]:
        rows = m1lib.run_query({**query, "timeRange": "1h", "aggregations": ["count"]}).rows
        return {row.get("reason"): row["count"] for row in rows}

    executions = {"metric": "tool_executions"}
    wait_for(lambda: counted(executions), "the recorded execution")
    decisions = {"metric": "policy_decisions", "groupBy": ["reason"]}
    wait_for(
        lambda: counted(decisions),
        "an ok and a revoked decision",
        until=lambda counts: {"ok", "revoked"} <= set(counts),
    )
