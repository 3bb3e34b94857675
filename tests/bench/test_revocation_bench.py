"""bench/revocation.py at its smoke size, so it keeps working; figures are checked for shape only."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FIGURES = {
    "is_revoked_median_us": ("us", 2.0, "<="),
    "is_revoked_p99_us": ("us", None, None),
    "denial_median_us": ("us", None, None),
    "verify_ops_per_s": ("ops/s", None, None),
    "bare_decode_ops_per_s": ("ops/s", None, None),
    "redis_design_ops_per_s": ("ops/s", None, None),
    "verify_vs_bare_ratio": ("x", 0.85, ">="),
    "verify_vs_redis_speedup": ("x", 3.0, ">="),
    "verify_vs_redis_same_decoder_speedup": ("x", None, None),
    "policy_recorder_us": ("us", 2.0, "<="),
    "redis_exists_rtt_median_us": ("us", None, None),
    "redis_exists_rtt_p99_us": ("us", None, None),
    "propagation_p50_ms": ("ms", None, None),
    "propagation_p99_ms": ("ms", 10.0, "<="),
    "propagation_max_ms": ("ms", None, None),
    "revoke_token_p50_ms": ("ms", None, None),
    "startup_load_s": ("s", 2.0, "<="),
}


@pytest.mark.postgres
@pytest.mark.redis
def test_revocation_bench_smoke(tmp_path: Path, pg_url: str, shared_redis_url: str) -> None:
    """pg_url and shared_redis_url only make the test skip (or fail in CI) without the services."""
    done = subprocess.run(
        [sys.executable, "bench/revocation.py", "--smoke", "--results-dir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert not (tmp_path / "revocation.json").exists()  # smoke never overwrites full figures
    document = json.loads((tmp_path / "revocation-smoke.json").read_text())
    assert (document["benchmark"], document["smoke"]) == ("revocation", True)
    assert document["parameters"]["jtis"] == 2_000
    assert document["parameters"]["propagation_seen_before_return"] >= 0
    figures = {figure["name"]: figure for figure in document["figures"]}
    assert list(figures) == list(FIGURES)
    for name, (unit, target, op) in FIGURES.items():
        figure = figures[name]
        assert figure["unit"] == unit, name
        assert figure["value"] >= 0, name
        assert figure.get("target") == target, name
        if target is not None:
            assert figure["target_op"] == op, name
            assert isinstance(figure["meets_target"], bool), name
    assert figures["verify_ops_per_s"]["reference"] == figures["bare_decode_ops_per_s"]["value"]
