"""bench/instrumentation.py at its smoke size, so it keeps working; figures are checked for shape."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIGURES = {
    "cached_call_hit_bare_us": None,
    "cached_call_hit_us": None,
    "cached_call_added_us": 2.0,
    "cached_call_added_wall_us": None,
    "tool_call_bare_us": None,
    "tool_call_us": None,
    "tool_call_added_us": 2.0,
    "tool_call_added_wall_us": None,
    "tool_call_added_real_us": None,
    "record_cost_us": 2.0,
    "record_cost_wall_us": None,
    "tool_call_cost_us": 2.0,
    "tool_call_cost_wall_us": None,
}


def test_instrumentation_bench_smoke(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "bench/instrumentation.py", "--smoke", "--results-dir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert not (tmp_path / "instrumentation.json").exists()  # smoke never overwrites full figures
    document = json.loads((tmp_path / "instrumentation-smoke.json").read_text())
    assert (document["benchmark"], document["smoke"]) == ("instrumentation", True)
    assert document["parameters"]["batches"] == 200
    assert document["parameters"]["dropped_events"] == 0
    figures = {figure["name"]: figure for figure in document["figures"]}
    assert list(figures) == list(FIGURES)
    for name, target in FIGURES.items():
        figure = figures[name]
        assert figure["unit"] == "us", name
        assert figure.get("target") == target, name
        if target is not None:
            assert (figure["target_op"], type(figure["meets_target"])) == ("<=", bool), name
        elif "_added_" not in name:
            assert figure["value"] > 0, name
    assert figures["cached_call_hit_us"]["reference"] == figures["cached_call_hit_bare_us"]["value"]
    assert figures["tool_call_us"]["reference"] == figures["tool_call_bare_us"]["value"]
