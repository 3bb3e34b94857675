"""What every benchmark shares: the ``--smoke`` flag, machine and commit, one JSON file per run.

A benchmark script defines ``measure(smoke) -> Measured`` and calls :func:`main`. Results go to
``bench/results/<name>.json``, or ``<name>-smoke.json`` for smoke runs, so the smoke run of
``make test`` never overwrites the full figures that ``readme_table.py`` publishes.

Importing this module also puts the repository root on ``sys.path``, so ``python bench/x.py`` finds
``m1lib`` without an install.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@dataclass(frozen=True)
class Figure:
    """One measured number; ``target`` is a ceiling unless ``higher_is_better``."""

    name: str
    value: float
    unit: str
    target: float | None = None
    higher_is_better: bool = False
    reference: float | None = None
    reference_label: str | None = None

    def to_json(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"name": self.name, "value": self.value, "unit": self.unit}
        if self.target is not None:
            entry["target"] = self.target
            entry["target_op"] = ">=" if self.higher_is_better else "<="
            met = self.value >= self.target if self.higher_is_better else self.value <= self.target
            entry["meets_target"] = bool(met)
        if self.reference is not None:
            entry["reference"] = self.reference
            entry["reference_label"] = self.reference_label or ""
        return entry


@dataclass
class Measured:
    """What ``measure`` returns: the figures and the parameters that produced them."""

    figures: list[Figure]
    parameters: dict[str, Any] = field(default_factory=dict)


def percentiles_ms(samples_s: Sequence[float]) -> dict[str, float]:
    """p50/p95/p99/max of durations in seconds, in milliseconds (nearest-rank, no interpolation)."""
    ordered = sorted(samples_s)
    if not ordered:
        raise ValueError("no samples")

    def rank(p: float) -> float:
        index = max(0, min(len(ordered) - 1, int(-(-p * len(ordered) // 100)) - 1))
        return ordered[index] * 1000

    return {
        "p50": rank(50),
        "p95": rank(95),
        "p99": rank(99),
        "max": ordered[-1] * 1000,
        "mean": statistics.fmean(ordered) * 1000,
    }


def machine_info() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_bytes": _memory_bytes(),
        "python": platform.python_version(),
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_bytes() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def git_commit() -> str | None:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None


def result_path(name: str, *, smoke: bool, results_dir: Path = RESULTS_DIR) -> Path:
    return results_dir / (f"{name}-smoke.json" if smoke else f"{name}.json")


def main(
    name: str,
    description: str,
    measure: Callable[[bool], Measured],
    argv: Sequence[str] | None = None,
) -> Path:
    """Parse the flags, run ``measure``, write and print the result; returns the file written."""
    parser = argparse.ArgumentParser(prog=f"bench/{name}.py", description=description)
    parser.add_argument("--smoke", action="store_true", help="small size: checks it still works")
    parser.add_argument(
        "--results-dir", type=Path, default=RESULTS_DIR, help="where to write <name>.json"
    )
    options = parser.parse_args(argv)
    started = datetime.now(UTC)
    measured = measure(options.smoke)
    document = {
        "benchmark": name,
        "description": description,
        "smoke": options.smoke,
        "timestamp": started.isoformat(timespec="seconds"),
        "commit": git_commit(),
        "machine": machine_info(),
        "parameters": measured.parameters,
        "figures": [figure.to_json() for figure in measured.figures],
    }
    path = result_path(name, smoke=options.smoke, results_dir=options.results_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    for figure in document["figures"]:
        verdict = (
            ""
            if "meets_target" not in figure
            else (
                f"  (target {figure['target_op']} {figure['target']}: "
                f"{'met' if figure['meets_target'] else 'MISSED'})"
            )
        )
        print(f"{name}.{figure['name']}: {figure['value']:.2f} {figure['unit']}{verdict}")
    print(f"wrote {path}")
    return path


REDIS_URL = "redis://127.0.0.1:6379/0"  # the machine's shared Redis; benches use own prefixes


def clean_redis(prefix: str) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        for found in client.scan_iter(match=f"{prefix}:*", count=1000):
            client.delete(found)
    except redis.RedisError as error:
        print(f"could not clean Redis prefix {prefix}: {error}", file=sys.stderr)
    finally:
        client.close()
