"""Query engine: run_query against pandas and DuckDB on the same policy_decisions events.

One run builds 10M events over 7 days (50 tools x 3 scopes, 10 % denied with 4 reasons, 1,000
subjects, checkMs lognormal) ending now, loads them into M1's store through the bulk path that
persisted and streamed batches take (raw kept 24 h; 1-minute and 1-hour rollups), and puts the
same events in one pandas DataFrame (categorical strings), which DuckDB also queries in place.
Queries: (1) the seed's example, 24 h by tool and scope with count and p50/p95/p99 of checkMs;
(2) 24 h in 5-minute buckets by tool, p99 of checkMs. Each engine runs each query once to warm
up, then the median of the timed runs is reported; run_query is timed with ``to_frame()`` so all
three produce a DataFrame. DuckDB and pandas percentiles are exact; run_query's come from the
sketch and are compared to DuckDB's per group. Separately: recording throughput end to end (until
the events are in the store) of record_events in batches of 10,000 and 200,000 policy_decisions
dicts, each with and without a float timestamp, and of record_event; raw bytes per event, and
bytes per point of compressed rollups.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import _harness
import duckdb
import numpy as np
import pandas as pd
from _harness import Figure, Measured

from m1lib.metrics import MetricsRuntime, codec
from m1lib.metrics.recorder import Recorder
from m1lib.metrics.schema import METRICS
from m1lib.metrics.store import HOUR_US, MINUTE_US, EventStore
from m1lib.settings import Settings

NAME = "query"
METRIC = "policy_decisions"
DAY_US = 24 * HOUR_US
TOOLS = [f"tool_{i:02d}" for i in range(50)]
SCOPES = ["read", "write", "execute"]
REASONS = ["ok", "insufficient_scope", "revoked", "expired", "tool_mismatch"]
SUBJECTS = [f"agent-{i:04d}" for i in range(1000)]
LOAD_BATCH = 1_000_000
TARGET_RATIO = 1.5
RECORD_BATCHES = (10_000, 200_000)  # events per record_events call
RECORD_EVENTS_TARGET = 200_000  # events/s, each record_events figure
RECORD_EVENT_TARGET = 50_000  # events/s, record_event
SEED_QUERY = {
    "metric": METRIC,
    "timeRange": "24h",
    "groupBy": ["toolName", "scope"],
    "filters": [{"field": "allowed", "op": "eq", "value": False}],
    "aggregations": ["count", "percentiles"],
}
BUCKET_QUERY = {
    "metric": METRIC,
    "timeRange": "24h",
    "interval": "5m",
    "groupBy": ["toolName"],
    "aggregations": ["p99"],
}


def make_events(n: int, now_us: int, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    allowed = rng.random(n) < 0.9
    return {
        "ts": np.sort(rng.integers(now_us - 7 * DAY_US, now_us, n)),
        "toolName": rng.integers(0, len(TOOLS), n).astype(np.int32),
        "scope": rng.integers(0, len(SCOPES), n).astype(np.int32),
        "allowed": allowed.astype(np.int8),
        "reason": np.where(allowed, 0, rng.integers(1, len(REASONS), n)).astype(np.int32),
        "subject": rng.integers(0, len(SUBJECTS), n).astype(np.int32),
        "checkMs": rng.lognormal(0.0, 0.5, n),
        "replica": np.zeros(n, dtype=np.int32),
    }


def load_store(store: EventStore, events: dict[str, np.ndarray]) -> float:
    """Load through import_coded + insert, the path of persisted and streamed batches; seconds."""
    dictionaries = {
        "toolName": TOOLS,
        "scope": SCOPES,
        "reason": REASONS,
        "subject": SUBJECTS,
        "replica": ["bench"],
    }
    started = time.perf_counter()
    for lo in range(0, events["ts"].size, LOAD_BATCH):
        part = {name: array[lo : lo + LOAD_BATCH] for name, array in events.items()}
        chunk = store.import_coded(METRIC, part["ts"], part, dictionaries)
        store.insert(METRIC, chunk)
    return time.perf_counter() - started


def make_frame(events: dict[str, np.ndarray]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "timestamp": pd.to_datetime(events["ts"], unit="us", utc=True),
            "toolName": pd.Categorical.from_codes(events["toolName"], TOOLS),
            "scope": pd.Categorical.from_codes(events["scope"], SCOPES),
            "allowed": events["allowed"].astype(bool),
            "reason": pd.Categorical.from_codes(events["reason"], REASONS),
            "subject": pd.Categorical.from_codes(events["subject"], SUBJECTS),
            "checkMs": events["checkMs"],
        }
    )


def timed(run: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """Median milliseconds of ``repeats`` runs after one warm-up, and the last answer."""
    answer = run()
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        answer = run()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples), answer


def duckdb_queries(
    con: duckdb.DuckDBPyConnection, lo: pd.Timestamp, hi: pd.Timestamp
) -> dict[str, Callable[[], pd.DataFrame]]:
    window = "timestamp >= $lo AND timestamp < $hi"
    seed = (
        f"SELECT toolName, scope, count(*) AS count, quantile_cont(checkMs, [0.5, 0.95, 0.99]) AS q "
        f"FROM events WHERE {window} AND NOT allowed GROUP BY ALL"
    )
    buckets = (
        f"SELECT epoch_us(timestamp) // 300000000 AS bucket, toolName, quantile_cont(checkMs, 0.99) AS p99 "
        f"FROM events WHERE {window} GROUP BY ALL"
    )
    params = {"lo": lo.to_pydatetime(), "hi": hi.to_pydatetime()}
    return {
        "q1": lambda: con.execute(seed, params).df(),
        "q2": lambda: con.execute(buckets, params).df(),
    }


def pandas_queries(
    frame: pd.DataFrame, lo: pd.Timestamp, hi: pd.Timestamp
) -> dict[str, Callable[[], Any]]:
    def seed() -> pd.DataFrame:
        part = frame[(frame.timestamp >= lo) & (frame.timestamp < hi) & ~frame.allowed]
        grouped = part.groupby(["toolName", "scope"], observed=True).checkMs
        out = grouped.quantile([0.5, 0.95, 0.99]).unstack()
        out["count"] = grouped.size()
        return out

    def buckets() -> pd.Series:
        part = frame[(frame.timestamp >= lo) & (frame.timestamp < hi)]
        bucket = part.timestamp.dt.floor("5min")
        return part.groupby([bucket, part.toolName], observed=True).checkMs.quantile(0.99)

    return {"q1": seed, "q2": buckets}


def max_relative_error(
    ours: pd.DataFrame, exact: pd.DataFrame, keys: list[str], pairs: list[tuple[str, str]]
) -> float:
    merged = ours.merge(exact, on=keys, how="outer", indicator=True)
    if not (merged["_merge"] == "both").all():
        raise RuntimeError(
            f"run_query and DuckDB disagree on the groups: {merged['_merge'].value_counts()}"
        )
    worst = 0.0
    for mine, theirs in pairs:
        error = (merged[mine] - merged[theirs]).abs() / merged[theirs].abs()
        worst = max(worst, float(error.max()))
    return worst


def decision_events(n: int, *, timestamped: bool, seed: int = 3) -> list[dict[str, Any]]:
    """``n`` policy_decisions dicts as a caller hands them to record_events; with
    ``timestamped``, each carries a float epoch-seconds ``timestamp``, rising over the last minute
    (within the raw retention, so every event is stored raw and rolled up)."""
    rng = np.random.default_rng(seed)
    events = [
        {
            "metric": METRIC,
            "toolName": TOOLS[int(t)],
            "scope": SCOPES[int(s)],
            "allowed": bool(a),
            "reason": "ok" if a else "revoked",
            "subject": SUBJECTS[int(u)],
            "checkMs": float(c),
        }
        for t, s, a, u, c in zip(
            rng.integers(0, 50, n),
            rng.integers(0, 3, n),
            rng.random(n) < 0.9,
            rng.integers(0, 1000, n),
            rng.lognormal(0, 0.5, n),
            strict=True,
        )
    ]
    if timestamped:
        start = time.time() - 60.0
        for i, event in enumerate(events):
            event["timestamp"] = start + i * (60.0 / n)
    return events


def end_to_end_rate(
    n: int, queue_size: int, record: Callable[[Recorder], object]
) -> tuple[float, int]:
    """Events per second of ``record`` (which records ``n`` events) and the events dropped: from
    the first call until flush says every event is in the store (the ingest thread runs
    meanwhile, as in a replica), into a fresh store with the default queue bound, so a producer
    faster than the ingest thread would show as drops."""
    recorder = Recorder(EventStore(), replica_id="bench", queue_size=queue_size)
    recorder.start()
    try:
        started = time.perf_counter()
        record(recorder)
        if not recorder.flush(120):
            raise RuntimeError("the recorded events did not reach the store within 120 s")
        elapsed = time.perf_counter() - started
        dropped = recorder.dropped_events
    finally:
        recorder.close()
    return (n - dropped) / elapsed, dropped


def in_batches(events: list[dict[str, Any]], batch: int) -> Callable[[Recorder], object]:
    """record_events in calls of ``batch`` events (lists the caller already holds)."""
    batches = [events[lo : lo + batch] for lo in range(0, len(events), batch)]
    return lambda recorder: [recorder.record_events(part) for part in batches]


def one_by_one(events: list[dict[str, Any]]) -> Callable[[Recorder], object]:
    """record_event, one call per event with keyword fields."""

    def run(recorder: Recorder) -> None:
        record = recorder.record_event
        for e in events:
            record(
                METRIC,
                toolName=e["toolName"],
                scope=e["scope"],
                allowed=e["allowed"],
                reason=e["reason"],
                subject=e["subject"],
                checkMs=e["checkMs"],
            )

    return run


def recording_rates(
    n_events: int, n_single: int, runs: int, queue_size: int
) -> tuple[dict[str, list[float]], int]:
    """Every run's events per second for each recording figure, and the events dropped in all.

    Each record_events figure records ``n_events`` policy_decisions dicts in batches of
    RECORD_BATCHES, with and without a float timestamp; record_event records ``n_single``."""
    rates: dict[str, list[float]] = {}
    dropped = 0
    for timestamped in (False, True):
        events = decision_events(n_events, timestamped=timestamped)
        for _ in range(runs):  # interleaved, so a noisy moment touches every figure alike
            for batch in RECORD_BATCHES:
                rate, lost = end_to_end_rate(n_events, queue_size, in_batches(events, batch))
                rates.setdefault(recording_figure(batch, timestamped), []).append(rate)
                dropped += lost
        del events
    single = decision_events(n_single, timestamped=False)
    for _ in range(runs):
        rate, lost = end_to_end_rate(n_single, queue_size, one_by_one(single))
        rates.setdefault("record_event_per_s", []).append(rate)
        dropped += lost
    return rates, dropped


def recording_figure(batch: int, timestamped: bool) -> str:
    return f"record_events_{batch // 1000}k{'_timestamped' if timestamped else ''}_per_s"


def rollup_compression(store: EventStore) -> dict[str, tuple[float, float]]:
    """Per resolution: (compressed bytes per point, in-memory bytes per point) of the rollups."""
    snap = store.snapshot(METRIC)
    values = {name: d.values for name, d in snap.dictionaries.items()}
    out = {}
    for label, res in (("1m", MINUTE_US), ("1h", HOUR_US)):
        blocks = snap.rollups[res]
        points = sum(b.size for b in blocks)
        compressed = sum(len(codec.encode_block(METRICS[METRIC], b, values, {})) for b in blocks)
        out[label] = (compressed / points, sum(b.nbytes for b in blocks) / points)
    return out


def measure(smoke: bool) -> Measured:
    n = 100_000 if smoke else 10_000_000
    repeats = 2 if smoke else 7
    now_us = time.time_ns() // 1000
    settings = Settings(_env_file=None)
    runtime = MetricsRuntime(settings, replica_id="bench", clock=lambda: now_us / 1e6)
    events = make_events(n, now_us)
    load_s = load_store(runtime.store, events)
    runtime.store.compact()
    frame = make_frame(events)
    del events
    con = duckdb.connect()
    con.register("events", frame)
    hi = pd.Timestamp(now_us, unit="us", tz="UTC")
    lo = hi - pd.Timedelta(hours=24)

    def ours(query: dict[str, Any]) -> Callable[[], pd.DataFrame]:
        return lambda: runtime.run_query(query).to_frame()

    engines = {
        "run_query": {"q1": ours(SEED_QUERY), "q2": ours(BUCKET_QUERY)},
        "duckdb": duckdb_queries(con, lo, hi),
        "pandas": pandas_queries(frame, lo, hi),
    }
    ms: dict[tuple[str, str], float] = {}
    answers: dict[tuple[str, str], Any] = {}
    for query in ("q1", "q2"):
        for engine, runs in engines.items():
            ms[(engine, query)], answers[(engine, query)] = timed(runs[query], repeats)
    exact_ms = {
        q: timed(ours({**spec, "exact": True}), repeats)[0]
        for q, spec in (("q1", SEED_QUERY), ("q2", BUCKET_QUERY))
    }
    sources = {
        q: runtime.run_query(spec).meta for q, spec in (("q1", SEED_QUERY), ("q2", BUCKET_QUERY))
    }

    duck1 = answers[("duckdb", "q1")]
    for i, p in enumerate(("p50", "p95", "p99")):
        duck1[f"exact_{p}"] = duck1["q"].map(lambda q, i=i: q[i])
    for column in ("toolName", "scope"):
        duck1[column] = duck1[column].astype(str)
    ours1 = answers[("run_query", "q1")]
    error1 = max_relative_error(
        ours1,
        duck1,
        ["toolName", "scope"],
        [("p50", "exact_p50"), ("p95", "exact_p95"), ("p99", "exact_p99")],
    )
    if not (
        ours1.merge(duck1, on=["toolName", "scope"])["count_x"]
        == ours1.merge(duck1, on=["toolName", "scope"])["count_y"]
    ).all():
        raise RuntimeError("run_query and DuckDB disagree on the counts")
    duck2 = answers[("duckdb", "q2")].rename(columns={"p99": "exact_p99"})
    duck2["toolName"] = duck2["toolName"].astype(str)
    ours2 = answers[("run_query", "q2")]
    ours2["bucket"] = ours2["bucket"].astype("int64") // 300_000_000  # us since epoch, per 5 min
    duck2["bucket"] = duck2["bucket"].astype("int64")
    error2 = max_relative_error(ours2, duck2, ["bucket", "toolName"], [("p99", "exact_p99")])

    record_runs = 1 if smoke else 5
    rates, dropped = recording_rates(
        200_000 if smoke else 1_000_000,
        10_000 if smoke else 300_000,
        record_runs,
        settings.events.queue_size,
    )
    raw = next(t for t in runtime.store.stats() if t.metric == METRIC and t.resolution == "raw")
    rollups = rollup_compression(runtime.store)

    figures = []
    for query in ("q1", "q2"):
        duck = ms[("duckdb", query)]
        figures.append(
            Figure(
                f"{query}_run_query_ms",
                round(ms[("run_query", query)], 2),
                "ms",
                target=round(TARGET_RATIO * duck, 2),
                reference=round(duck, 2),
                reference_label="DuckDB",
            )
        )
        figures.append(Figure(f"{query}_duckdb_ms", round(duck, 2), "ms"))
        figures.append(Figure(f"{query}_pandas_ms", round(ms[("pandas", query)], 2), "ms"))
        figures.append(Figure(f"{query}_run_query_exact_ms", round(exact_ms[query], 2), "ms"))
    figures += [
        Figure("q1_percentile_max_error_pct", round(error1 * 100, 4), "%", target=1.0),
        Figure("q2_p99_max_error_pct", round(error2 * 100, 4), "%", target=1.0),
        *(
            Figure(
                name,
                round(statistics.median(rates[name])),
                "events/s",
                target=RECORD_EVENTS_TARGET
                if name != "record_event_per_s"
                else RECORD_EVENT_TARGET,
                higher_is_better=True,
            )
            for name in rates
        ),
        Figure("record_dropped_events", float(dropped), "events", target=0),
        Figure("raw_bytes_per_event", round(raw.bytes_per_point, 2), "B", target=64),
        Figure("rollup_1m_compressed_bytes_per_point", round(rollups["1m"][0], 2), "B"),
        Figure("rollup_1h_compressed_bytes_per_point", round(rollups["1h"][0], 2), "B"),
        Figure("rollup_1m_memory_bytes_per_point", round(rollups["1m"][1], 2), "B"),
        Figure("load_events_per_s", round(n / load_s), "events/s"),
    ]
    return Measured(
        figures=figures,
        parameters={
            "events": n,
            "days": 7,
            "tools": len(TOOLS),
            "scopes": len(SCOPES),
            "repeats": repeats,
            "raw_events_kept": raw.points,
            "q1_source": f"{sources['q1'].source} {'+'.join(sources['q1'].resolutions)}",
            "q2_source": f"{sources['q2'].source} {'+'.join(sources['q2'].resolutions)}",
            "q1_rows_scanned": sources["q1"].rows_scanned,
            "q2_rows_scanned": sources["q2"].rows_scanned,
            "duckdb": duckdb.__version__,
            "duckdb_threads": int(con.execute("SELECT current_setting('threads')").fetchone()[0]),  # type: ignore[index]
            "run_query_timing": "run_query(query).to_frame(), median after one warm-up run",
            "recording": (
                "end to end, median of the runs: from the first record_events call (validation "
                "and enqueue on the caller's thread) until flush reports every event in the store "
                "(the ingest thread, running meanwhile, builds columns, dictionary codes, raw "
                "chunks and 1m/1h rollups); policy_decisions dicts, with or without a float "
                "timestamp, in batches of 10,000 or 200,000; a fresh store per run; default queue "
                "bound; record_event: one call per event, measured the same way"
            ),
            "recording_events_per_figure": 200_000 if smoke else 1_000_000,
            "recording_single_events": 10_000 if smoke else 300_000,
            "recording_runs": record_runs,
            "recording_runs_events_per_s": {
                name: [round(rate) for rate in runs] for name, runs in rates.items()
            },
        },
    )


if __name__ == "__main__":
    _harness.main(NAME, (__doc__ or "").strip().splitlines()[0], measure)
