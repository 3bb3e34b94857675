"""The store: retention drops exactly what it should, compaction changes no answer, memory is small."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import numpy as np
import pytest

from m1lib.errors import UsageError
from m1lib.metrics.engine import execute
from m1lib.metrics.plan import Limits
from m1lib.metrics.query import parse_query
from m1lib.metrics.schema import METRICS
from m1lib.metrics.store import EventStore
from tests.m1lib.metrics.factories import HOUR_US, MINUTE_US, NOW_S, NOW_US, load, make_events


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def rows(store: EventStore, query: dict[str, Any], prefer: str = "auto") -> list[dict[str, Any]]:
    result = execute(parse_query(query), store.snapshot(query["metric"]), Limits(), prefer=prefer)  # type: ignore[arg-type]
    return result.rows


def points(store: EventStore, metric: str, resolution: str) -> int:
    return next(
        t.points for t in store.stats() if t.metric == metric and t.resolution == resolution
    )


def test_retention_drops_exactly_what_it_should() -> None:
    clock = Clock(NOW_S)
    store = EventStore(raw_retention=timedelta(hours=2), retention_1m=timedelta(hours=5),
                       retention_1h=timedelta(hours=10), chunk_events=1024, clock=clock)  # fmt: skip
    frame = make_events("health_checks", 3000, start_us=NOW_US - 12 * HOUR_US, end_us=NOW_US)
    load(store, "health_checks", frame, batches=6)
    ts = frame.ts.to_numpy()
    # at insert, raw keeps only the last 2 h, 1m rollups the buckets ending after now - 5 h
    assert points(store, "health_checks", "raw") == int((ts >= NOW_US - 2 * HOUR_US).sum())
    clock.now += 3600.0  # an hour later
    now = NOW_US + HOUR_US
    dropped = store.apply_retention()
    raw_cut = now - 2 * HOUR_US
    assert points(store, "health_checks", "raw") == int((ts >= raw_cut).sum())
    assert dropped["raw"] == int(((ts >= NOW_US - 2 * HOUR_US) & (ts < raw_cut)).sum())
    snap = store.snapshot("health_checks")
    for res, keep in ((MINUTE_US, 5 * HOUR_US), (HOUR_US, 10 * HOUR_US)):
        cutoff = now - keep
        first_bucket = cutoff - cutoff % res  # the bucket holding the cut-off still counts
        blocks = snap.rollups[res]
        assert min(b.start_us for b in blocks) >= first_bucket
        assert sum(int(b.count.sum()) for b in blocks) == int((ts - ts % res >= first_bucket).sum())
    # what is left answers exactly: counts per hour over the 1h retention
    answer = rows(store, {"metric": "health_checks", "timeRange": "10h", "interval": "1h"})
    first = (now - 10 * HOUR_US) // HOUR_US * HOUR_US
    in_range = ts[(ts >= first) & (ts < now)]
    assert sum(r["count"] for r in answer) == in_range.size
    assert store.apply_retention() == {"raw": 0, "1m": 0, "1h": 0}  # idempotent


def test_events_older_than_every_retention_are_counted_and_not_kept() -> None:
    store = EventStore(clock=lambda: NOW_S)
    old = NOW_US - 100 * 24 * HOUR_US
    store.append(
        "error_alerts",
        [old],
        {
            "level": ["warning"],
            "source": ["s"],
            "message": ["m"],
            "metadata": [None],
            "replica": "r",
        },
    )
    assert store.expired_events == 1
    assert all(t.points == 0 for t in store.stats())


def test_compaction_merges_chunks_and_changes_no_answer() -> None:
    store = EventStore(chunk_events=2048, clock=lambda: NOW_S)
    frame = make_events("policy_decisions", 6000, seed=5)
    load(store, "policy_decisions", frame, batches=40)
    queries = [
        {"metric": "policy_decisions", "timeRange": "24h", "groupBy": ["toolName", "allowed"],
         "aggregations": ["count", "p99", "avg", "stddev", "max"]},
        {"metric": "policy_decisions", "timeRange": "24h", "interval": "1h", "aggregations": ["count", "p50"]},
        {"metric": "policy_decisions", "timeRange": "24h", "groupBy": ["subject"], "aggregations": ["count"]},
    ]  # fmt: skip
    before = {(i, p): rows(store, q, p) for i, q in enumerate(queries) for p in ("raw", "rollup")}
    chunks_before = {
        t.resolution: t.chunks for t in store.stats() if t.metric == "policy_decisions"
    }
    report = store.compact()
    chunks_after = {t.resolution: t.chunks for t in store.stats() if t.metric == "policy_decisions"}
    assert report["raw"] == 0
    assert chunks_after["raw"] <= chunks_before["raw"]
    assert chunks_after["1m"] <= chunks_before["1m"]
    after = {(i, p): rows(store, q, p) for i, q in enumerate(queries) for p in ("raw", "rollup")}
    for key, value in before.items():
        assert len(after[key]) == len(value), key
        for got, want in zip(after[key], value, strict=True):
            assert got == {
                k: pytest.approx(v) if isinstance(v, float) else v for k, v in want.items()
            }
    assert store.compact()["dictionary_values_pruned"] == 0


def test_unused_strings_are_pruned_when_their_events_expire() -> None:
    clock = Clock(NOW_S)
    store = EventStore(raw_retention=timedelta(hours=1), clock=clock)
    n = 3000
    ts = np.arange(n, dtype=np.int64) * 1000 + NOW_US - 2 * HOUR_US + 1  # all inside the next hour
    store.append("error_alerts", ts, {"level": ["warning"] * n, "source": ["s"] * n,
                                      "message": [f"unique {i}" for i in range(n)], "metadata": [None] * n, "replica": "r"})  # fmt: skip
    assert points(store, "error_alerts", "raw") == 0
    store.append("error_alerts", [NOW_US - 10], {"level": ["critical"], "source": ["s"], "message": ["live"],
                                                 "metadata": [None], "replica": "r"})  # fmt: skip
    report = store.compact()
    assert report["dictionary_values_pruned"] == n
    assert rows(
        store, {"metric": "error_alerts", "timeRange": "1h", "groupBy": ["message", "level"]}
    ) == [{"message": "live", "level": "critical", "count": 1}]
    assert rows(store, {"metric": "error_alerts", "timeRange": "3h", "groupBy": ["level"]}) == [
        {"level": "critical", "count": 1}, {"level": "warning", "count": n}
    ]  # fmt: skip


def test_raw_events_take_at_most_64_bytes_each() -> None:
    store = EventStore(clock=lambda: NOW_S)
    for metric in METRICS:
        load(store, metric, make_events(metric, 20_000, seed=3))
    for tier in store.stats():
        if tier.resolution == "raw":
            assert tier.points == 20_000
            assert tier.bytes_per_point <= 64, (tier.metric, tier.bytes_per_point)


def test_many_small_batches_stay_a_few_chunks() -> None:
    store = EventStore(chunk_events=1 << 16, clock=lambda: NOW_S)
    frame = make_events("health_checks", 4000, seed=1)
    load(store, "health_checks", frame, batches=400)
    raw = next(t for t in store.stats() if t.metric == "health_checks" and t.resolution == "raw")
    assert raw.chunks <= 12  # log2(400) + 1: a binary counter, not one chunk per batch


def test_bulk_strings_must_be_text() -> None:
    store = EventStore(clock=lambda: NOW_S)
    with pytest.raises(UsageError, match="string column holds nan"):
        store.append("error_alerts", [NOW_US], {"level": ["warning"], "source": [float("nan")],
                                                "message": ["m"], "metadata": [None], "replica": "r"})  # fmt: skip


def test_watchers_hear_of_each_addition_of_their_metric_and_stop_when_told() -> None:
    store = EventStore(clock=Clock(NOW_S))
    heard: list[str] = []
    unwatch = store.watch("error_alerts", lambda: heard.append("alert"))
    before = store.version("error_alerts")
    alert = {"level": ["warning"], "source": ["s"], "message": ["m"], "metadata": [None]}
    store.append("error_alerts", [NOW_US - 10], {**alert, "replica": "r"})
    store.append("health_checks", [NOW_US - 10], {"component": ["db"], "status": ["healthy"],
                                                  "latencyMs": [1.0], "replica": "r"})  # fmt: skip
    assert heard == ["alert"]  # another metric's events say nothing
    assert store.version("error_alerts") == before + 1
    unwatch()
    unwatch()  # twice is harmless
    store.append("error_alerts", [NOW_US - 5], {**alert, "replica": "r"})
    assert heard == ["alert"]
    assert store.version("error_alerts") == before + 2
    with pytest.raises(KeyError):
        store.watch("no_such_metric", lambda: None)
