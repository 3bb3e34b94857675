"""`m1 cache policy show|set|reset` on a migrated SQLite database."""

from __future__ import annotations

import getpass

import pytest

from m1lib.tokens import TokenCodec
from tests.m1lib.test_cli import configured, m1  # noqa: F401 (a fixture)


def test_set_show_and_reset_a_tool_rule(
    configured: TokenCodec,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    actor = f"cli:{getpass.getuser()}"
    code, out, _ = m1(capsys, "cache", "policy", "set", "weather", "--ttl", "60", "--budget", "300",
                      "--peak-hours", "8-18", "--peak-ttl", "30", "--swr", "100")  # fmt: skip
    assert code == 0
    assert out.startswith("weather: ttl 60 s, budget 300 s, 08-18h UTC 30 s else 60 s")
    assert f"stale-while-revalidate 100 s (v1, {actor})" in out
    code, out, _ = m1(capsys, "cache", "policy", "show")
    assert code == 0
    assert "weather: ttl 60 s" in out
    assert "by " + actor in out
    code, out, _ = m1(capsys, "cache", "policy", "reset", "weather")
    assert (code, out) == (0, "weather: rule removed\n")
    code, out, _ = m1(capsys, "cache", "policy", "show", "weather")
    assert "no tool has a rule" in out


def test_set_beyond_the_budget_names_the_field_and_the_limit(
    configured: TokenCodec,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, _, err = m1(
        capsys, "cache", "policy", "set", "weather", "--ttl", "600", "--budget", "300"
    )
    assert code == 2
    assert "ttl_s: 600 s exceeds the staleness budget 300 s; allowed: at most 300 s" in err
