"""Each benchmark at its smoke size, so it keeps working; figures are checked for shape, not speed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONTROL_FIGURES = [
    *(f"pubsub_apply_{stat}_ms" for stat in ("p50", "p95", "p99", "max")),
    *(f"polling_apply_{stat}_ms" for stat in ("p50", "p95", "p99", "max")),
    "issue_p50_ms",
]


def run_script(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
        check=False,
    )  # fmt: skip


@pytest.mark.postgres
@pytest.mark.redis
def test_control_bench_smoke(tmp_path: Path, pg_url: str, shared_redis_url: str) -> None:
    """pg_url and shared_redis_url only make the test skip (or fail in CI) without the services."""
    done = run_script("bench/control.py", "--smoke", "--results-dir", str(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert not (tmp_path / "control.json").exists()  # smoke never overwrites full figures
    document = json.loads((tmp_path / "control-smoke.json").read_text())
    assert document["benchmark"] == "control"
    assert document["smoke"] is True
    assert set(document["machine"]) == {"platform", "cpu", "cores", "memory_bytes", "python"}
    assert "commit" in document
    assert document["parameters"]["samples_per_mode"] == 2 * document["parameters"]["commands"]
    figures = {figure["name"]: figure for figure in document["figures"]}
    assert list(figures) == CONTROL_FIGURES
    for figure in figures.values():
        assert figure["unit"] == "ms"
        assert figure["value"] >= 0
    p99 = figures["pubsub_apply_p99_ms"]
    assert (p99["target"], p99["target_op"]) == (50.0, "<=")
    assert isinstance(p99["meets_target"], bool)
    assert p99["reference"] == figures["polling_apply_p99_ms"]["value"]


def _result(smoke: bool, value: float) -> dict[str, object]:
    return {
        "benchmark": "control",
        "smoke": smoke,
        "timestamp": "2026-01-01T00:00:00+00:00",
        "commit": "abc1234",
        "machine": {"cpu": "Test CPU", "cores": 4, "memory_bytes": 8 * 2**30, "python": "3.11"},
        "figures": [
            {"name": "pubsub_apply_p99_ms", "value": value, "unit": "ms", "target": 50.0,
             "target_op": "<=", "meets_target": value <= 50, "reference": 51.0,
             "reference_label": "polling only"},
        ],
    }  # fmt: skip


def test_readme_table_rewrites_only_the_marked_section(tmp_path: Path) -> None:
    (tmp_path / "control.json").write_text(json.dumps(_result(False, 7.5)))
    (tmp_path / "control-smoke.json").write_text(json.dumps(_result(True, 999.0)))
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- bench:start -->\nold table\n<!-- bench:end -->\noutro\n")
    done = run_script(
        "bench/readme_table.py", "--readme", str(readme), "--results-dir", str(tmp_path)
    )
    assert done.returncode == 0, done.stderr
    text = readme.read_text()
    assert text.startswith("intro\n<!-- bench:start -->\n| benchmark | figure | value |")
    assert text.endswith("<!-- bench:end -->\noutro\n")
    assert "old table" not in text
    assert (
        "| control | pubsub_apply_p99_ms | 7.50 ms (polling only: 51 ms) | ≤ 50 ms | yes |" in text
    )
    assert "999" not in text  # smoke results are never published
    assert "Test CPU, 4 cores, 8 GiB" in text


def test_readme_table_without_markers_prints_and_leaves_the_file(tmp_path: Path) -> None:
    (tmp_path / "control.json").write_text(json.dumps(_result(False, 70.0)))
    readme = tmp_path / "README.md"
    readme.write_text("no markers here\n")
    done = run_script(
        "bench/readme_table.py", "--readme", str(readme), "--results-dir", str(tmp_path)
    )
    assert done.returncode == 0, done.stderr
    assert readme.read_text() == "no markers here\n"
    assert "| control | pubsub_apply_p99_ms | 70 ms (polling only: 51 ms) | ≤ 50 ms | **no** |" in (
        done.stdout
    )
