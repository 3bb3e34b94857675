"""Running a resolved query over a store snapshot, vectorised end to end.

The steps, each in a module of its own and each bounded by the query's budget (time, cancel and
memory checks between bounded steps): plan the segments (``plan``), read and key the parts and
number the groups (``grouping``), reduce per group (``aggregate``), then having, order, page and
detect (``postprocess``).
"""

from __future__ import annotations

import threading
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from m1lib.epoch import from_us
from m1lib.metrics import grouping, postprocess
from m1lib.metrics.aggregate import PERCENTILE_OPS, Aggregator, aggregate, group_arrays
from m1lib.metrics.budget import Limits, QueryBudget
from m1lib.metrics.filters import conditions
from m1lib.metrics.plan import Choice, Prefer, Resolved, choose_segments, resolve
from m1lib.metrics.postprocess import GroupTable
from m1lib.metrics.query import Query
from m1lib.metrics.result import Anomaly, ColumnKind, QueryMeta, QueryResult, Trend
from m1lib.metrics.sketch import RELATIVE_ERROR
from m1lib.metrics.store import MetricSnapshot

__all__ = ["execute"]

_SPARSE_GROUPS: Final = 65536  # past this many group ids, mostly empty ones are renumbered


def execute(
    query: Query,
    snap: MetricSnapshot,
    limits: Limits,
    *,
    dropped_events: int = 0,
    prefer: Prefer = "auto",
    cancel: threading.Event | None = None,
    budget: QueryBudget | None = None,
) -> QueryResult:
    """Answer ``query`` from ``snap``; InputError for what the query or the guards forbid.

    ``prefer`` pins raw events or rollups where both could answer (default: the cheaper).
    ``cancel`` set by another thread stops the query at its next step (QueryCancelled).
    ``budget`` replaces the one built from ``limits`` and ``cancel`` (tests bring a clock).
    """
    budget = budget or QueryBudget(limits, cancel=cancel)
    r = resolve(query, snap.now_us, limits)
    done = _compute(r, snap, budget, prefer)
    budget.phase = "ordering"
    budget.check()
    order = postprocess.order(r, done, snap)
    keep = order
    if r.having is not None:
        mask = postprocess.having_mask(r, done, snap)
        keep = order[mask[order]]
    total = int(keep.size)
    limit = query.limit if query.limit is not None else limits.max_rows
    page = keep[query.offset : query.offset + limit]
    truncated = query.limit is None and total - query.offset > limits.max_rows
    columns = {name: array[page] for name, array in done.columns.items()}
    anomalies: list[Anomaly] = []
    anomalies_total = 0
    trend: Trend | None = None
    if query.detect is not None:
        budget.phase = "detecting"
        anomalies, anomalies_total, trend = postprocess.detect(
            r, done, budget, lambda whole: _compute(whole, snap, budget, "auto")
        )
    bound = None
    if done.percentiles:
        bound = 0.0 if r.exact else RELATIVE_ERROR
    meta = QueryMeta(
        execution_ms=(budget.clock() - budget.started) * 1000.0,
        rows_scanned=done.rows_scanned,
        source=done.choice.source,
        percentile_error_bound=bound,
        dropped_events=dropped_events,
        range_from=from_us(done.choice.start_us),
        range_to=from_us(done.choice.end_us),
        resolutions=done.choice.resolutions,
        total_rows=total,
        truncated=truncated,
        total_anomalies=anomalies_total,
    )
    return QueryResult(
        columns=columns, kinds=done.kinds, anomalies=anomalies, trend=trend, meta=meta
    )


def _compute(r: Resolved, snap: MetricSnapshot, budget: QueryBudget, prefer: Prefer) -> GroupTable:
    limits = budget.limits
    budget.phase = "planning"
    choice = choose_segments(r, snap, need_entries=_needs_entries(r), prefer=prefer)
    space = grouping.KeySpace(r, snap, choice.start_us, choice.end_us)
    budget.reserve(
        _scan_bytes(r, choice),
        "/timeRange",
        f"reading {choice.cost:,} events and rollup rows",
        [
            "a shorter timeRange",
            "filters on dimensions",
            "fewer fields",
            "percentiles without exact",
        ],
    )
    budget.phase = "scanning"
    raw, rollups, scanned = grouping.read(r, snap, space, choice, budget)
    budget.phase = "grouping"
    group_keys = grouping.assign_groups(raw, rollups, space, budget, 8 * group_arrays(r))
    groups = int(group_keys.size)
    budget.check()
    agg = Aggregator(raw, rollups, groups, snap, budget)
    count = agg.count()
    present = np.flatnonzero(count > 0)
    if present.size > limits.max_groups:
        grouping.too_many(int(present.size), limits)
    if groups > 4 * present.size and groups > _SPARSE_GROUPS:  # mostly empty: keep live ones
        group_keys = grouping.keep_groups(raw, rollups, group_keys, present)
        groups = int(present.size)
        agg = Aggregator(raw, rollups, groups, snap, budget)
        count = agg.count()
        present = np.arange(groups)
    starts, codes = space.decode(group_keys[present])
    columns: dict[str, NDArray[Any]] = {}
    kinds: dict[str, ColumnKind] = {}
    code_columns: dict[str, NDArray[np.int64]] = {}
    for f, code in zip(r.group_fields, codes, strict=True):
        code_columns[f.name] = code
        columns[f.name] = grouping.decode(f, code, snap)
        kinds[f.name] = "object"
    if r.interval_us is not None:
        columns["bucket"] = starts
        kinds["bucket"] = "bucket"
    percentiles = False
    budget.phase = "aggregating"
    for a in r.aggregations:
        budget.check()
        values = aggregate(a, agg, r, choice, present, starts)
        if a.op in PERCENTILE_OPS:
            percentiles = True
        for key, column in zip(a.keys, values, strict=True):
            if a.op in ("first", "last") and a.field is not None and a.field.coded:
                code_columns[key] = column.astype(np.int64)
                columns[key] = grouping.decode(a.field, column.astype(np.int64), snap)
                kinds[key] = "object"
            else:
                columns[key] = column
                kinds[key] = "int" if column.dtype.kind == "i" else "float"
    bucket_index = (
        (starts // r.interval_us - space.first_bucket)
        if r.interval_us
        else np.zeros(present.size, dtype=np.int64)
    )
    series = group_keys[present] % max(1, space.size // space.buckets)
    return GroupTable(
        columns, kinds, code_columns, bucket_index, series, scanned, choice, percentiles
    )


def _needs_entries(r: Resolved) -> bool:
    return any(a.op in PERCENTILE_OPS for a in r.aggregations) and not r.exact


def _scan_bytes(r: Resolved, choice: Choice) -> int:
    """About what reading ``choice`` holds at once: keys, selections and the columns read."""
    fields = {f.name for f in r.group_fields}
    fields |= {c.field.name for c in conditions(r.filter)}
    for a in r.aggregations:
        fields |= {a.field.name} if a.field is not None else set()
        fields |= {c.field.name for c in conditions(a.where)}
    per_unit = 48 + 8 * len(fields)
    if any(a.op in PERCENTILE_OPS for a in r.aggregations):
        per_unit += 32 if r.exact else 48  # sorted values, or sketch entries and their cells
    return choice.cost * per_unit
