"""`m1 cost report`: the optimize-cost report read from the API (M1_API_URL, M1_API_KEY), as text
or JSON, budgets shown and no alert raised."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from m1lib import cli
from tests.m1lib.api.test_forwarding import Api, serve_api  # noqa: F401 (a fixture)


def test_cost_report_prints_the_report_from_the_api_as_text_and_json(
    serve_api: Callable[..., Api],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    api = serve_api()
    now = datetime.now(UTC)
    at = max(now - timedelta(minutes=1), now.replace(hour=0, minute=0, second=0, microsecond=0))
    for tool, cost in (("web_search", 0.25), ("web_search", 0.5), ("summarise", 0.000001)):
        api.runtime.metrics.recorder.record_event(
            "cost_updates", timestamp=at, model="claude-opus-4-5", toolName=tool,
            component="agent", inputTokens=10, outputTokens=1, costUsd=cost,
        )  # fmt: skip
    assert api.runtime.metrics.flush()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("M1_API_URL", api.url)
    monkeypatch.setenv("M1_API_KEY", api.key)
    monkeypatch.setenv("M1_COST_BUDGET_DAILY_USD", "0.5")
    assert cli.main(["cost", "report"]) == 0
    text = capsys.readouterr().out
    assert "- Spend today: **$0.750001**" in text
    assert "| day |" in text
    assert "Alerts: not raised here." in text
    assert cli.main(["cost", "report", "--json", "--days", "3"]) == 0
    answer: Any = json.loads(capsys.readouterr().out)
    assert answer["todayUsd"] == "0.750001"
    assert answer["periods"]["lookbackDays"] == 3
    assert answer["byTool"][0] == {
        "toolName": "web_search", "calls": 2, "spendUsd": "0.750000", "sharePct": 100.0,
        "avgCallUsd": "0.375000", "maxCallUsd": "0.500000", "inputTokens": 20, "outputTokens": 2,
    }  # fmt: skip
    assert answer["budgets"][0]["crossed"] == ["soft", "hard"]
    assert answer["alertsRaised"] is None
    rows = api.runtime.metrics.run_query({"metric": "error_alerts", "timeRange": "1h"}).rows
    assert rows == []  # no alert


def test_cost_report_refuses_days_out_of_range(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["cost", "report", "--days", "61"])
    assert exited.value.code == 2
    assert "allowed: 1-60" in capsys.readouterr().err
