"""bench/query.py at its smoke size: it still runs and reports every figure; speed is not checked."""

from __future__ import annotations

import json
from pathlib import Path

from tests.bench.test_bench_smoke import run_script

QUERY_FIGURES = [
    "q1_run_query_ms", "q1_duckdb_ms", "q1_pandas_ms", "q1_run_query_exact_ms",
    "q2_run_query_ms", "q2_duckdb_ms", "q2_pandas_ms", "q2_run_query_exact_ms",
    "q1_percentile_max_error_pct", "q2_p99_max_error_pct",
    "record_events_10k_per_s", "record_events_200k_per_s",
    "record_events_10k_timestamped_per_s", "record_events_200k_timestamped_per_s",
    "record_event_per_s", "record_dropped_events",
    "raw_bytes_per_event", "rollup_1m_compressed_bytes_per_point", "rollup_1h_compressed_bytes_per_point",
    "rollup_1m_memory_bytes_per_point", "load_events_per_s",
]  # fmt: skip


def test_query_bench_smoke(tmp_path: Path) -> None:
    done = run_script("bench/query.py", "--smoke", "--results-dir", str(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert not (tmp_path / "query.json").exists()  # smoke never overwrites the full figures
    document = json.loads((tmp_path / "query-smoke.json").read_text())
    assert document["benchmark"] == "query"
    assert document["smoke"] is True
    figures = {figure["name"]: figure for figure in document["figures"]}
    assert list(figures) == QUERY_FIGURES
    for figure in figures.values():
        assert figure["value"] >= 0
    for name in ("q1_run_query_ms", "q2_run_query_ms"):
        assert figures[name]["reference_label"] == "DuckDB"
        assert abs(figures[name]["target"] - 1.5 * figures[name]["reference"]) < 0.02
    assert figures["q1_percentile_max_error_pct"]["target"] == 1.0
    assert figures["raw_bytes_per_event"]["target"] == 64
    for name in QUERY_FIGURES:
        if name.startswith("record_events_"):
            assert (figures[name]["target"], figures[name]["target_op"]) == (200_000, ">=")
    assert (
        figures["record_event_per_s"]["target"],
        figures["record_event_per_s"]["target_op"],
    ) == (
        50_000,
        ">=",
    )
    runs = document["parameters"]["recording_runs_events_per_s"]
    assert set(runs) == {name for name in QUERY_FIGURES if name.startswith("record_event")} - {
        "record_dropped_events"
    }
    assert "flush" in document["parameters"]["recording"]
    assert document["parameters"]["events"] == 100_000
