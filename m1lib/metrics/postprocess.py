"""What a query does with its groups once they are aggregated: having, ordering and detection.

All of it works on :class:`GroupTable`, one row per group, and never on the parts again, except
the trend of a grouped query, which aggregates the whole series anew through ``compute``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from m1lib.epoch import from_us
from m1lib.errors import InputError
from m1lib.metrics import detect as detection
from m1lib.metrics.budget import QueryBudget
from m1lib.metrics.filters import evaluate
from m1lib.metrics.plan import Choice, Resolved
from m1lib.metrics.result import Anomaly, ColumnKind, Trend
from m1lib.metrics.schema import Kind
from m1lib.metrics.store import MetricSnapshot

__all__ = ["GroupTable", "detect", "having_mask", "order"]

# a missing bucket of these is a 0 in a series, not a gap
_ADDITIVE: Final = frozenset({"count", "sum", "rate"})


@dataclass
class GroupTable:
    """One row per group: the output columns, and what having, ordering and detection need."""

    columns: dict[str, NDArray[Any]]
    kinds: dict[str, ColumnKind]
    codes: dict[str, NDArray[np.int64]]  # group fields (and str first/last outputs) as codes
    bucket_index: NDArray[np.int64]
    series_key: NDArray[np.int64]  # the groups' key without the bucket
    rows_scanned: int
    choice: Choice
    percentiles: bool


def _result_column(done: GroupTable, name: str) -> NDArray[Any]:
    return done.codes[name] if name in done.codes else done.columns[name]


def having_mask(r: Resolved, done: GroupTable, snap: MetricSnapshot) -> NDArray[np.bool_]:
    """The groups that pass ``having`` (string outputs compare by value, through their codes)."""
    assert r.having is not None
    dictionaries = dict(snap.dictionaries)
    sizes = dict(snap.sizes)
    for key, plan in r.outputs.items():
        if plan.field is not None and plan.field.kind is Kind.STR and key in done.codes:
            dictionaries[key] = snap.dictionaries[plan.field.name]
            sizes[key] = snap.sizes[plan.field.name]
    n = len(done.bucket_index)
    return evaluate(r.having, lambda name: _result_column(done, name), dictionaries, sizes, n)


def _sort_keys(
    name: str, descending: bool, r: Resolved, done: GroupTable, snap: MetricSnapshot
) -> list[NDArray[Any]]:
    """(null flag, value) sort keys of one column; nulls last in both directions."""
    if name == "bucket":
        value: NDArray[Any] = done.columns["bucket"]
        null = np.zeros(value.size, dtype=np.bool_)
    elif name in done.codes:
        codes = done.codes[name]
        plan = r.outputs.get(name)
        f = plan.field if plan is not None else next(g for g in r.group_fields if g.name == name)
        assert f is not None
        null = codes < 0
        if f.kind is Kind.STR:
            value = snap.dictionaries[f.name].ranks(snap.sizes[f.name])[codes]
        else:
            value = codes
    else:
        value = done.columns[name].astype(np.float64)
        null = np.isnan(value)
        value = np.where(null, 0.0, value)
    return [null, -value if descending else value]


def order(r: Resolved, done: GroupTable, snap: MetricSnapshot) -> NDArray[np.intp]:
    """Row order: ``orderBy``, then bucket, then the groupBy fields."""
    n = len(done.bucket_index)
    wanted = list(r.order)
    for default in (["bucket"] if r.interval_us else []) + [f.name for f in r.group_fields]:
        if default not in {name for name, _ in wanted}:
            wanted.append((default, False))
    if not wanted or n == 0:
        return np.arange(n)
    keys: list[NDArray[Any]] = []
    for name, descending in wanted:
        keys.extend(_sort_keys(name, descending, r, done, snap))
    return np.lexsort(tuple(reversed(keys)))


def detect(
    r: Resolved,
    done: GroupTable,
    budget: QueryBudget,
    compute: Callable[[Resolved], GroupTable],
) -> tuple[list[Anomaly], int, Trend | None]:
    """Anomalies per group series (the strongest ``M1_QUERY_MAX_ROWS``, by bucket), their
    total, and the trend of all groups together (``compute`` aggregates them anew)."""
    spec = r.query.detect
    assert spec is not None
    assert r.interval_us is not None
    buckets = int(
        max(
            1, (done.choice.end_us - 1) // r.interval_us - done.choice.start_us // r.interval_us + 1
        )
    )
    first_bucket = done.choice.start_us // r.interval_us
    anomalies: list[Anomaly] = []
    total = 0
    if spec.anomaly is not None:
        anomalies, total = _anomalies(r, done, budget, buckets, first_bucket)
    trend = None
    if spec.trend is not None:
        t = spec.trend
        source = done
        if r.group_fields:  # the trend of the whole series, all groups together
            whole = replace(r, group_fields=(), having=None, order=())
            source = compute(whole)
            budget.phase = "detecting"
        budget.reserve(buckets * 8 * 4, "/interval", f"a trend over {buckets:,} buckets")
        plan = r.outputs[t.field]
        values = _series(
            source.columns[t.field], source.bucket_index, buckets, plan.op in _ADDITIVE
        )
        fit = detection.trend(values, significance=t.significance)
        trend = Trend(
            t.field,
            fit.direction,
            fit.slope,
            fit.change_pct,
            fit.p_value,
            fit.r_squared,
            fit.points,
        )
    return anomalies, total, trend


def _anomalies(
    r: Resolved, done: GroupTable, budget: QueryBudget, buckets: int, first_bucket: int
) -> tuple[list[Anomaly], int]:
    """Each group's series scanned in turn; the work is bounded before it starts."""
    assert r.query.detect is not None
    a = r.query.detect.anomaly
    assert a is not None
    assert r.interval_us is not None
    limits = budget.limits
    additive = r.outputs[a.field].op in _ADDITIVE
    if done.series_key.size == 0:
        return [], 0
    order = np.argsort(done.series_key, kind="stable")
    keys = done.series_key[order]
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    ends = np.r_[starts[1:], keys.size]
    # an additive series has a value in every bucket (0 where none), others only where present
    points = buckets * int(starts.size) if additive else int(keys.size)
    cells = points * a.window
    if cells > limits.max_detect_cells:
        raise InputError(
            "/detect/anomaly/window",
            f"{starts.size:,} series of {buckets:,} buckets with a window of {a.window} is "
            f"{cells:,} cells of work",
            [
                f"at most {limits.max_detect_cells:,} (M1_QUERY_MAX_DETECT_CELLS)",
                "a smaller window",
                "a coarser interval or shorter timeRange",
                "fewer groupBy fields or more filters",
            ],
        )
    budget.reserve(
        buckets * 8 * 3 + detection.BLOCK_CELLS * 8 * 4,
        "/interval",
        f"anomaly detection over {buckets:,} buckets",
    )
    column = done.columns[a.field].astype(np.float64)
    found_series, found_index, found_value, found_score = [], [], [], []
    for number, (lo, hi) in enumerate(zip(starts.tolist(), ends.tolist(), strict=True)):
        budget.check()
        rows = order[lo:hi]
        values = np.full(buckets, 0.0 if additive else np.nan)
        values[done.bucket_index[rows]] = column[rows]  # NaN (no value) stays missing
        index, value, score = detection.anomaly_scores(
            values, method=a.method, window=a.window, threshold=a.threshold, check=budget.check
        )
        if index.size:
            found_series.append(np.full(index.size, number))
            found_index.append(index)
            found_value.append(value)
            found_score.append(score)
    if not found_index:
        return [], 0
    series = np.concatenate(found_series)
    index = np.concatenate(found_index)
    value = np.concatenate(found_value)
    score = np.concatenate(found_score)
    total = int(index.size)
    if total > limits.max_rows:  # keep the strongest, then report them in bucket order
        strongest = np.argsort(-np.abs(score), kind="stable")[: limits.max_rows]
        series, index = series[strongest], index[strongest]
        value, score = value[strongest], score[strongest]
    shown = np.lexsort((-np.abs(score), index))
    first_rows = order[starts]
    out = []
    for k in shown.tolist():
        row = int(first_rows[series[k]])
        group = {f.name: done.columns[f.name][row] for f in r.group_fields} or None
        bucket = from_us((first_bucket + int(index[k])) * r.interval_us)
        out.append(Anomaly(bucket, float(value[k]), round(float(score[k]), 6), a.field, group))
    return out, total


def _series(
    column: NDArray[Any], index: NDArray[np.int64], buckets: int, additive: bool
) -> NDArray[np.float64]:
    """A dense series over the buckets: 0 (additive) or NaN (missing) where no group row is."""
    values = np.full(buckets, 0.0 if additive else np.nan)
    values[index] = column.astype(np.float64)
    return values
