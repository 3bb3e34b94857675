"""bench/ops.py at its smoke size: 10 healthy checks and one fault (the bench's redis-server
killed) end to end, in this process under the session's Prefect harness (no second server).
Checks the result's shape and that the fault was remediated without a person; no speed is
asserted."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIGURES = {
    "healthy_check_p50_ms": ("ms", "<="),
    "healthy_check_p99_ms": ("ms", None),
    "healthy_check_max_ms": ("ms", None),
    "healed_without_person_pct": ("%", ">="),
    "worst_fault_to_verified_s": ("s", "<="),
}


def test_ops_bench_smoke(tmp_path: Path, prefect_harness: None) -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import ops  # type: ignore[import-not-found]
        from _harness import main  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(ROOT / "bench"))
    main("ops", "ops smoke", ops.measure_with, ["--smoke", "--results-dir", str(tmp_path)])
    assert not (tmp_path / "ops.json").exists()  # smoke never overwrites full figures
    document = json.loads((tmp_path / "ops-smoke.json").read_text())
    assert (document["benchmark"], document["smoke"]) == ("ops", True)
    assert set(document["machine"]) == {"platform", "cpu", "cores", "memory_bytes", "python"}
    figures = {figure["name"]: figure for figure in document["figures"]}
    assert list(figures) == list(FIGURES)
    for name, (unit, op) in FIGURES.items():
        assert figures[name]["unit"] == unit, name
        assert figures[name].get("target_op") == op, name
    assert figures["healthy_check_p50_ms"]["target"] == 50.0

    parameters = document["parameters"]
    assert parameters["healthy_runs"] == 10
    assert parameters["healthy_statuses"] == {"healthy": 10}, parameters["healthy_statuses"]
    assert "median" in parameters["rule"]
    (fault,) = parameters["faults"]
    assert (fault["fault"], fault["component"]) == ("redis_killed", "redis")
    assert fault["detected_after_checks"] is not None, fault
    assert fault["healed_without_person"] is True, fault
    assert fault["heal_runs"][0]["actions"][0][0] == "reset-redis-pools", fault
    assert fault["periods"] > 0
    assert fault["before"]["failing"] == [], fault
    after = fault["after_restart"]
    assert after["cache_backend_after"] == "redis", after
    assert set(after["redis_checks_after_restart"]) <= {"healthy", "degraded"}, after
    assert figures["healed_without_person_pct"]["value"] == 100.0
