"""`m1 healing pause|resume|status [component]` and `m1 incidents` on a migrated SQLite database."""

from __future__ import annotations

import getpass
from datetime import UTC, datetime, timedelta

import pytest

from m1lib.db.session import Database
from m1lib.ops import streaks
from m1lib.ops.report import CheckResult, HealthReport, Status
from m1lib.ops.streaks import Action, HealingPolicy
from m1lib.settings import load_settings
from m1lib.tokens import TokenCodec
from tests.m1lib.test_cli import configured, m1  # noqa: F401 (a fixture)

T0 = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def _fail(component: str, at: datetime) -> HealthReport:
    check = CheckResult(component, "probe", Status.UNHEALTHY, 1.0, None, "ms", "down", time=at)
    return HealthReport((check,), time=at)


def test_pause_status_resume_and_the_incident_names_the_operator(
    configured: TokenCodec,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    actor = f"cli:{getpass.getuser()}"
    code, out, _ = m1(capsys, "healing", "pause", "redis", "--reason", "failover drill")
    assert (code, out) == (0, f"healing paused for redis by {actor}\n")
    db = Database(load_settings())
    try:
        outcome = streaks.record_report(db, _fail("redis", T0), HealingPolicy(threshold=1))
        assert outcome["redis"].decision.action is Action.SUPPRESSED
    finally:
        db.dispose()
    code, out, _ = m1(capsys, "healing", "status")
    assert code == 0
    lines = {line.split()[0]: line for line in out.splitlines()}
    assert f"paused by {actor}" in lines["redis"]
    assert "1 failing in a row, 0 heals" in lines["redis"]
    assert "healing on" in lines["api"]
    assert "never checked" in lines["api"]
    code, out, _ = m1(capsys, "incidents", "--component", "redis")
    assert code == 0
    assert "redis" in out
    assert f"suppressed by {actor}" in out
    assert "docs/runbooks/redis.md" in out
    m1(capsys, "healing", "pause")
    code, out, _ = m1(capsys, "healing", "resume", "redis")
    assert "still paused: every component is" in out
    assert m1(capsys, "healing", "resume")[0] == 0
    code, out, _ = m1(capsys, "healing", "status", "redis")
    assert "healing on" in out


def test_incidents_pages_with_a_cursor_and_bad_arguments_exit_2(
    configured: TokenCodec,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    db = Database(load_settings())
    try:
        for index, component in enumerate(["api", "memory", "redis"]):
            streaks.record_report(
                db, _fail(component, T0 + timedelta(minutes=index)), HealingPolicy(threshold=1)
            )
    finally:
        db.dispose()
    code, out, _ = m1(capsys, "incidents", "--limit", "2")
    assert code == 0
    assert out.index("redis") < out.index("memory")
    assert "api " not in out
    cursor = out.strip().splitlines()[-1].split("--cursor ")[1]
    code, out, _ = m1(capsys, "incidents", "--limit", "2", "--cursor", cursor)
    assert "api" in out
    assert "more:" not in out
    assert m1(capsys, "incidents", "--limit", "0")[0] == 2
    assert m1(capsys, "healing", "pause", "kettle")[0] == 2


def test_status_shows_the_last_heal_and_the_cooldown_left(
    configured: TokenCodec,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    db = Database(load_settings())
    try:
        now = datetime.now(UTC)
        outcome = streaks.record_report(db, _fail("memory", now), HealingPolicy(threshold=1))
        assert outcome["memory"].decision.action is Action.HEAL
    finally:
        db.dispose()
    code, out, _ = m1(capsys, "healing", "status", "memory")
    assert code == 0
    assert f"1 failing in a row, 1 heals, last heal {now:%Y-%m-%d %H:%M:%S}Z" in out
    assert "(cooldown 300 s left)" in out or "(cooldown 299 s left)" in out
