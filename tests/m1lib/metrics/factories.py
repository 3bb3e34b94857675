"""Events for tests: random but reproducible, with nulls, edges at bucket boundaries, unique times.

``make_events(metric, n, ...)`` returns a DataFrame (``ts`` in microseconds, one column per field
including ``replica``) that tests both load into a store and hand to the pandas oracle.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from m1lib.metrics.schema import METRICS
from m1lib.metrics.store import EventStore

NOW_S = 1_800_001_234.567891  # deliberately not aligned to any bucket
NOW_US = int(NOW_S * 1_000_000)
HOUR_US = 3_600_000_000
MINUTE_US = 60_000_000

TOOLS = ["web_search", "web_fetch", "db_query", "fs_read", "fs_write", "shell"]
REASONS = ["insufficient_scope", "revoked", "expired"]


def _times(rng: np.random.Generator, n: int, start_us: int, end_us: int) -> np.ndarray:
    """n distinct times in [start, end), with some exactly on minute and hour boundaries."""
    edges = [start_us - start_us % HOUR_US + HOUR_US * k for k in range(1, 4)]
    edges += [end_us - end_us % MINUTE_US - MINUTE_US * k for k in range(0, 3)]
    edges = [t for t in edges if start_us <= t < end_us]
    times = set(edges)
    while len(times) < n:
        times.update(rng.integers(start_us, end_us, n - len(times)).tolist())
    return np.array(sorted(times)[:n], dtype=np.int64)


def make_events(
    metric: str,
    n: int,
    *,
    seed: int = 0,
    start_us: int = NOW_US - 20 * HOUR_US,
    end_us: int = NOW_US,
    replicas: Sequence[str] = ("r1", "r2"),
) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ts = _times(rng, n, start_us, end_us)
    rng.shuffle(ts)  # arrival order differs from time order

    def pick(values: Sequence[object], p: Sequence[float] | None = None) -> list[object]:
        index = rng.choice(len(values), size=n, p=p)
        return [values[i] for i in index]

    lognormal = rng.lognormal(0.0, 1.0, n)
    if metric == "policy_decisions":
        allowed = rng.random(n) < 0.8
        fields = {
            "toolName": pick(TOOLS),
            "scope": pick(["read", "write", "execute"]),
            "allowed": allowed.tolist(),
            "reason": ["ok" if a else r for a, r in zip(allowed, pick(REASONS), strict=True)],
            "subject": pick([f"agent-{i}" for i in range(30)]),
            "checkMs": lognormal.tolist(),
        }
    elif metric == "tool_executions":
        success = rng.random(n) < 0.85
        errors = pick(["timeout", "crashed", None])
        fields = {
            "toolName": pick(TOOLS),
            "scope": pick(["read", "write", "execute"]),
            "success": success.tolist(),
            "durationMs": (lognormal * 100).tolist(),
            "error": [None if s else e for s, e in zip(success, errors, strict=True)],
        }
    elif metric == "cache_operations":
        fields = {
            "cache": pick(["policy", "tools"]),
            "toolName": pick([*TOOLS[:3], None]),
            "op": pick(["get", "get", "set", "evict"]),
            "hit": (rng.random(n) < 0.6).tolist(),
            "latencyMs": (lognormal / 10).tolist(),
        }
    elif metric == "cost_updates":
        inputs = rng.integers(0, 5000, n)
        outputs = rng.integers(0, 2000, n)
        fields = {
            "model": pick(["small", "medium", "large"]),
            "toolName": pick(TOOLS[:4]),
            "component": pick(["planner", "executor"]),
            "inputTokens": inputs.tolist(),
            "outputTokens": outputs.tolist(),
            "costUsd": (inputs * 1e-6 + outputs * 3e-6).tolist(),
        }
    elif metric == "error_alerts":
        fields = {
            "level": pick(["warning", "critical"], [0.8, 0.2]),
            "source": pick(["cache", "policy", "db"]),
            "message": pick([f"problem {i}" for i in range(12)]),
            "metadata": pick([None, '{"host":"a"}', '{"host":"b","retries":3}']),
        }
    else:
        fields = {
            "component": pick(["db", "redis", "api"]),
            "status": pick(["healthy", "degraded", "unhealthy"], [0.8, 0.15, 0.05]),
            "latencyMs": lognormal.tolist(),
        }
    frame = pd.DataFrame({"ts": ts, **fields, "replica": pick(list(replicas))})
    assert list(frame.columns[1:]) == METRICS[metric].field_names()
    return frame


def load(store: EventStore, metric: str, frame: pd.DataFrame, *, batches: int = 4) -> None:
    """Append ``frame`` in a few batches, as the ingest thread would."""
    for part in np.array_split(np.arange(len(frame)), batches):
        rows = frame.iloc[part]
        columns = {name: [None if v is None or v != v else v for v in rows[name].tolist()]
                   for name in METRICS[metric].field_names()}  # fmt: skip
        store.append(metric, rows["ts"].to_numpy(), columns)


def as_records(metric: str, frame: pd.DataFrame) -> list[dict[str, object]]:
    """The frame as record_events input (timestamps as epoch seconds; replica is set by the recorder)."""
    out = []
    for row in frame.to_dict("records"):
        event = {key: value for key, value in row.items() if key not in ("ts", "replica")}
        event = {k: (None if isinstance(v, float) and v != v else v) for k, v in event.items()}
        out.append({"metric": metric, "timestamp": row["ts"] / 1e6, **event})
    return out
