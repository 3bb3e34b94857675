from __future__ import annotations

from datetime import UTC, datetime, timedelta

from m1lib.metrics import MetricsRuntime
from m1lib.ops.cost.figures import fetch_figures, figures_from_rows
from m1lib.ops.cost.policy import Figures


def test_figures_per_tool_from_the_metrics(metrics: MetricsRuntime) -> None:
    record = metrics.recorder.record
    for hit in (True, True, True, False):
        record("cache_operations", None, {"cache": "redis", "toolName": "weather", "op": "get",
                                          "hit": hit, "latencyMs": 1.0})  # fmt: skip
    record("cache_operations", None, {"cache": "redis", "toolName": "weather", "op": "set",
                                      "hit": False, "latencyMs": 1.0})  # fmt: skip
    for success in (True, False):
        record("tool_executions", None, {"toolName": "weather", "scope": "read",
                                         "success": success, "durationMs": 5.0})  # fmt: skip
    record("cost_updates", None, {"model": "m", "toolName": "weather", "component": "c",
                                  "inputTokens": 1, "outputTokens": 1, "costUsd": 0.25})  # fmt: skip
    assert metrics.flush()
    now = datetime.now(UTC)
    found = fetch_figures(metrics.run_query, now - timedelta(hours=1), now + timedelta(minutes=1))
    assert found == {"weather": Figures(hit_rate=0.75, error_rate=0.5, spend_usd=0.25)}


def test_a_tool_without_events_of_a_kind_has_no_figure_there() -> None:
    rows = {"hit_rate": [{"toolName": "a", "count": 0, "rate": None}],
            "error_rate": [{"toolName": "a", "count": 3, "rate": 0.0}]}  # fmt: skip
    assert figures_from_rows(rows) == {"a": Figures(error_rate=0.0)}
