"""bench/stream.py at its smoke size (20 clients, phases of 1.5 s): the result's shape, and that
every client of both servers received snapshots and alerts. No figure is checked for speed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIGURES = {
    "snapshot_p50_ms": ("ms", None),
    "snapshot_p99_ms": ("ms", "<="),
    "alert_p50_ms": ("ms", None),
    "alert_p99_ms": ("ms", "<="),
    "memory_per_client_kib": ("KiB", "<="),
    "stalled_snapshot_p99_ms": ("ms", None),
    "stalled_alert_p99_ms": ("ms", None),
    "stalled_within_noise": ("yes/no", ">="),
    "client_cpu_pct": ("% of a core", None),
    "server_cpu_pct": ("% of a core", None),
}


def test_stream_bench_smoke(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "bench/stream.py", "--smoke", "--results-dir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert not (tmp_path / "stream.json").exists()  # smoke never overwrites full figures
    document = json.loads((tmp_path / "stream-smoke.json").read_text())
    assert (document["benchmark"], document["smoke"]) == ("stream", True)
    assert set(document["machine"]) == {"platform", "cpu", "cores", "memory_bytes", "python"}
    figures = {figure["name"]: figure for figure in document["figures"]}
    assert list(figures) == list(FIGURES)
    for name, (unit, op) in FIGURES.items():
        figure = figures[name]
        assert figure["unit"] == unit, name
        assert figure["value"] >= 0, name
        assert figure.get("target_op") == op, name
        if op is not None:
            assert isinstance(figure["meets_target"], bool), name
    assert figures["snapshot_p99_ms"]["target"] == figures["alert_p99_ms"]["target"] == 50.0
    memory = figures["memory_per_client_kib"]
    assert memory["target"] == memory["reference"]  # no more than the reference's
    assert figures["stalled_within_noise"]["value"] in (0.0, 1.0)

    parameters = document["parameters"]
    assert parameters["clients"] == 20
    for server in ("m1", "reference"):
        run = parameters[server]
        deliveries = run["deliveries"]
        assert deliveries["clients"] == 20, server
        assert deliveries["alerts_raised"] > 0, server
        assert deliveries["min_ticks_per_client"] > 0, server  # every client got snapshots
        assert deliveries["min_alerts_per_client"] > 0, server  # and alerts
        assert run["client_cpu"]["user_s"] + run["client_cpu"]["sys_s"] >= 0, server
        assert run["gc_full_collections"]["tracked_objects_at_end"] > 0, server
    for kind in ("snapshots", "alerts"):
        latency = parameters["latency_ms"][kind]
        for part in ("m1_normal_1", "m1_normal_2", "m1_stalled", "reference"):
            assert latency[part]["p50"] <= latency[part]["p99"] <= latency[part]["max"], part
        assert latency["samples_m1_stalled"] > 0
        assert isinstance(latency["stalled_within_noise"], bool)


def test_readme_table_shows_a_verdict_as_a_word(tmp_path: Path) -> None:
    document = {
        "benchmark": "stream", "smoke": False, "timestamp": "2026-01-01T00:00:00+00:00",
        "commit": "abc1234", "machine": {"cpu": "Test CPU"},
        "figures": [
            {"name": "stalled_within_noise", "value": 0.0, "unit": "yes/no", "target": 1.0,
             "target_op": ">=", "meets_target": False},
        ],
    }  # fmt: skip
    (tmp_path / "stream.json").write_text(json.dumps(document))
    done = subprocess.run(
        [sys.executable, "bench/readme_table.py", "--readme", str(tmp_path / "none.md"),
         "--results-dir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "| stream | stalled_within_noise | no | yes | **no** | Test CPU |" in done.stdout
