"""Running a resolved query over a store snapshot, vectorised end to end.

Each segment of the plan yields *parts*: raw events or rollup rows in its time range that pass the
filters, each with the integer key of its group (bucket index and group field codes in mixed
radix). All aggregations are then ``bincount``-style reductions over those keys, so the work is a
few passes over arrays whatever the number of groups. Rollup rows carry summaries (count, sum,
min, max, M2, sketch entries) and raw events are rows of one event, so both merge the same way:
means and variances by the exact parallel formulas, percentiles by adding sketch counts.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from m1lib.errors import InputError
from m1lib.metrics import detect
from m1lib.metrics.budget import Limits, QueryBudget
from m1lib.metrics.columns import RawChunk
from m1lib.metrics.filters import Node, conditions, evaluate
from m1lib.metrics.plan import (
    RAW,
    AggregationPlan,
    Choice,
    Prefer,
    Resolved,
    choose_segments,
    resolve,
)
from m1lib.metrics.query import Query
from m1lib.metrics.result import Anomaly, ColumnKind, QueryMeta, QueryResult, Trend, to_datetime
from m1lib.metrics.rollup import RollupBlock
from m1lib.metrics.schema import FieldSpec, Kind
from m1lib.metrics.sketch import RELATIVE_ERROR, group_quantiles
from m1lib.metrics.store import MetricSnapshot

__all__ = ["execute"]

_DENSE_GROUPS: Final = 1 << 22  # key spaces up to this size index arrays directly
_KEY_LIMIT: Final = 1 << 62
_INT64_SPAN: Final = float(1 << 63)
_PERCENTILE_OPS = frozenset({"median", "p50", "p90", "p95", "p99", "percentiles"})
_ADDITIVE = frozenset({"count", "sum", "rate"})  # a missing bucket of these is a 0 in a series


@dataclass
class _RawPart:
    chunk: RawChunk
    index: NDArray[np.intp] | None  # selected rows of chunk; None: all
    key: NDArray[np.int64] = field(init=False)
    gid: NDArray[np.int64] = field(init=False)
    _cache: dict[str, NDArray[Any]] = field(default_factory=dict)

    def column(self, name: str) -> NDArray[Any]:
        if name not in self._cache:
            data = self.chunk.columns[name]
            self._cache[name] = data if self.index is None else data[self.index]
        return self._cache[name]

    def codes(self, name: str) -> NDArray[np.uint16]:
        key = f"#codes/{name}"
        if key not in self._cache:
            data = self.chunk.codes[name]
            self._cache[key] = data if self.index is None else data[self.index]
        return self._cache[key]

    @property
    def ts(self) -> NDArray[np.int64]:
        return self.chunk.ts if self.index is None else self.chunk.ts[self.index]


@dataclass
class _RollupPart:
    block: RollupBlock
    lo: int
    hi: int
    index: NDArray[np.intp]  # selected rows, relative to lo
    key_all: NDArray[np.int64]  # per row lo:hi, -1 where filtered out
    gid: NDArray[np.int64] = field(init=False)
    gid_all: NDArray[np.int64] = field(init=False)

    @cached_property
    def count(self) -> NDArray[np.int64]:
        return self.block.count[self.lo : self.hi][self.index]

    def dim(self, name: str) -> NDArray[Any]:
        return self.block.dims[name][self.lo : self.hi][self.index]

    def stat(self, measure: str, part: str) -> NDArray[np.float64]:
        data: NDArray[np.float64] = getattr(self.block.measures[measure], part)
        return data[self.lo : self.hi][self.index]

    def entries(
        self, measure: str
    ) -> tuple[NDArray[np.int64], NDArray[np.uint16], NDArray[np.int64]]:
        """(group, code, count) of the sketch entries of the selected rows."""
        m = self.block.measures[measure]
        e0, e1 = int(m.offsets[self.lo]), int(m.offsets[self.hi])
        per_row = np.diff(m.offsets[self.lo : self.hi + 1])
        group = np.repeat(self.gid_all, per_row)
        keep = group >= 0
        return group[keep], m.codes[e0:e1][keep], m.counts[e0:e1][keep]


class _Space:
    """The mixed-radix key of a group: bucket index, then each group field's code + 1."""

    def __init__(self, r: Resolved, snap: MetricSnapshot, start: int, end: int) -> None:
        self.interval = r.interval_us
        self.first_bucket = 0 if self.interval is None else start // self.interval
        self.buckets = (
            1
            if self.interval is None
            else max(1, (end - 1) // self.interval - self.first_bucket + 1)
        )
        self.fields = r.group_fields
        self.cards = [snap.sizes[f.name] + 1 if f.kind is Kind.STR else 3 for f in self.fields]
        size = self.buckets
        for card in self.cards:
            size *= card
        if size >= _KEY_LIMIT:
            raise InputError(
                "/groupBy",
                "these fields have too many combinations of values",
                ["fewer groupBy fields", "a coarser interval"],
            )
        self.size = size

    def keys(
        self, times: NDArray[np.int64], column: Callable[[str], NDArray[Any]]
    ) -> NDArray[np.int64]:
        if self.interval is None:
            key = np.zeros(times.size, dtype=np.int64)
        else:
            key = times // self.interval
            key -= self.first_bucket
        for f, card in zip(self.fields, self.cards, strict=True):
            key *= card
            key += column(f.name)
            key += 1
        return key

    def decode(self, keys: NDArray[np.int64]) -> tuple[NDArray[np.int64], list[NDArray[np.int64]]]:
        """Bucket start (us) and each group field's code per key."""
        rest = keys.copy()
        codes: list[NDArray[np.int64]] = []
        for card in reversed(self.cards):
            codes.append(rest % card - 1)
            rest //= card
        codes.reverse()
        starts = (rest + self.first_bucket) * (self.interval or 0)
        return starts, codes


@dataclass
class _Computed:
    columns: dict[str, NDArray[Any]]
    kinds: dict[str, ColumnKind]
    codes: dict[str, NDArray[np.int64]]  # group fields (and str first/last outputs) as codes
    bucket_index: NDArray[np.int64]
    series_key: NDArray[np.int64]  # the groups' key without the bucket
    rows_scanned: int
    choice: Choice
    percentiles: bool


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
    order = _order(r, done, snap)
    keep = order
    if r.having is not None:
        mask = _having_mask(r, done, snap)
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
        anomalies, anomalies_total, trend = _detect(r, done, snap, budget)
    bound = None
    if done.percentiles:
        bound = 0.0 if r.exact else RELATIVE_ERROR
    meta = QueryMeta(
        execution_ms=(budget.clock() - budget.started) * 1000.0,
        rows_scanned=done.rows_scanned,
        source=done.choice.source,
        percentile_error_bound=bound,
        dropped_events=dropped_events,
        range_from=to_datetime(done.choice.start_us),
        range_to=to_datetime(done.choice.end_us),
        resolutions=done.choice.resolutions,
        total_rows=total,
        truncated=truncated,
        total_anomalies=anomalies_total,
    )
    return QueryResult(
        columns=columns, kinds=done.kinds, anomalies=anomalies, trend=trend, meta=meta
    )


# -- reading parts ---------------------------------------------------------------------------


def _needs_entries(r: Resolved) -> bool:
    return any(a.op in _PERCENTILE_OPS for a in r.aggregations) and not r.exact


def _scan_bytes(r: Resolved, choice: Choice) -> int:
    """About what reading ``choice`` holds at once: keys, selections and the columns read."""
    fields = {f.name for f in r.group_fields}
    fields |= {c.field.name for c in conditions(r.filter)}
    for a in r.aggregations:
        fields |= {a.field.name} if a.field is not None else set()
        fields |= {c.field.name for c in conditions(a.where)}
    per_unit = 48 + 8 * len(fields)
    if any(a.op in _PERCENTILE_OPS for a in r.aggregations):
        per_unit += 32 if r.exact else 48  # sorted values, or sketch entries and their cells
    return choice.cost * per_unit


def _parts(
    r: Resolved, snap: MetricSnapshot, space: _Space, choice: Choice, budget: QueryBudget
) -> tuple[list[_RawPart], list[_RollupPart], int]:
    raw_parts: list[_RawPart] = []
    rollup_parts: list[_RollupPart] = []
    scanned = 0
    for segment in choice.segments:
        if segment.resolution == RAW:
            for chunk in snap.raw:
                if chunk.t_max < segment.start_us or chunk.t_min >= segment.end_us:
                    continue
                budget.check()
                lo, hi = chunk.bounds(segment.start_us, segment.end_us)
                if lo == hi:
                    continue
                scanned += hi - lo
                view = chunk.slice(lo, hi)
                index = None
                if r.filter is not None:
                    mask = evaluate(
                        r.filter, view.columns.__getitem__, snap.dictionaries, snap.sizes, hi - lo
                    )
                    if not mask.all():
                        index = np.flatnonzero(mask)
                        if index.size == 0:
                            continue
                part = _RawPart(view, index)
                part.key = space.keys(part.ts, part.column)
                raw_parts.append(part)
            continue
        for block in snap.rollups[segment.resolution]:
            if block.b_max < segment.start_us or block.b_min >= segment.end_us:
                continue
            budget.check()
            lo, hi = block.bounds(segment.start_us, segment.end_us)
            if lo == hi:
                continue
            scanned += hi - lo
            dims = {name: array[lo:hi] for name, array in block.dims.items()}
            if r.filter is not None:
                mask = evaluate(r.filter, dims.__getitem__, snap.dictionaries, snap.sizes, hi - lo)
                index = np.flatnonzero(mask)
            else:
                index = np.arange(hi - lo)
            key_all = np.full(hi - lo, -1, dtype=np.int64)
            if index.size:
                rollup = _RollupPart(block, lo, hi, index, key_all)
                key_all[index] = space.keys(block.bucket[lo:hi][index], rollup.dim)
                rollup_parts.append(rollup)
    return raw_parts, rollup_parts, scanned


# -- aggregating -----------------------------------------------------------------------------


class _Aggregator:
    """Per-group reductions over the parts, each computed once and shared by the outputs."""

    def __init__(
        self,
        raw: list[_RawPart],
        rollups: list[_RollupPart],
        groups: int,
        snap: MetricSnapshot,
        budget: QueryBudget,
    ) -> None:
        self.raw = raw
        self.rollups = rollups
        self.groups = groups
        self.snap = snap
        self.check = budget.check  # between parts: each part is at most one chunk
        self._cache: dict[tuple[Any, ...], Any] = {}

    def _bincount(
        self, gid: NDArray[np.int64], weights: NDArray[Any] | None = None
    ) -> NDArray[np.float64]:
        return np.bincount(gid, weights=weights, minlength=self.groups).astype(
            np.float64, copy=False
        )

    def count(self) -> NDArray[np.float64]:
        if ("count",) not in self._cache:
            total = np.zeros(self.groups)
            for p in self.raw:
                self.check()
                total += self._bincount(p.gid)
            for q in self.rollups:
                self.check()
                total += self._bincount(q.gid, q.count)
            self._cache[("count",)] = total
        result: NDArray[np.float64] = self._cache[("count",)]
        return result

    def count_where(self, node: Node | None, f: FieldSpec | None = None) -> NDArray[np.float64]:
        """Events that match ``node`` (and, with ``f``, have a value of ``f``)."""
        total = np.zeros(self.groups)
        snap = self.snap
        for p in self.raw:
            self.check()
            mask = np.ones(p.gid.size, dtype=np.bool_)
            if node is not None:
                mask &= evaluate(node, p.column, snap.dictionaries, snap.sizes, p.gid.size)
            if f is not None and f.coded:
                mask &= p.column(f.name) != -1
            total += self._bincount(p.gid[mask])
        for q in self.rollups:
            self.check()
            mask = np.ones(q.gid.size, dtype=np.bool_)
            if node is not None:
                mask &= evaluate(node, q.dim, snap.dictionaries, snap.sizes, q.gid.size)
            if f is not None and f.coded:
                mask &= q.dim(f.name) != -1
            total += self._bincount(q.gid[mask], q.count[mask])
        return total

    def sum(self, name: str) -> NDArray[np.float64]:
        key = ("sum", name)
        if key not in self._cache:
            total = np.zeros(self.groups)
            for p in self.raw:
                self.check()
                total += self._bincount(p.gid, p.column(name))
            for q in self.rollups:
                self.check()
                total += self._bincount(q.gid, q.stat(name, "sum"))
            self._cache[key] = total
        result: NDArray[np.float64] = self._cache[key]
        return result

    def extreme(self, name: str, low: bool) -> NDArray[np.float64]:
        key = ("min" if low else "max", name)
        if key not in self._cache:
            out = np.full(self.groups, np.inf if low else -np.inf)
            ufunc = np.minimum if low else np.maximum
            for p in self.raw:
                self.check()
                ufunc.at(out, p.gid, p.column(name))
            for q in self.rollups:
                self.check()
                ufunc.at(out, q.gid, q.stat(name, "min" if low else "max"))
            out[~np.isfinite(out)] = np.nan
            self._cache[key] = out
        result: NDArray[np.float64] = self._cache[key]
        return result

    def m2(self, name: str) -> NDArray[np.float64]:
        """Sum of squared deviations from the group mean (exact merge of rollup M2s)."""
        key = ("m2", name)
        if key not in self._cache:
            count = self.count()
            with np.errstate(invalid="ignore", divide="ignore"):
                mean = self.sum(name) / count
            total = np.zeros(self.groups)
            for p in self.raw:
                self.check()
                deviation = p.column(name) - mean[p.gid]
                total += self._bincount(p.gid, deviation * deviation)
            for q in self.rollups:
                self.check()
                rows = q.count
                deviation = q.stat(name, "sum") / rows - mean[q.gid]
                total += self._bincount(q.gid, q.stat(name, "m2") + rows * deviation * deviation)
            self._cache[key] = total
        result: NDArray[np.float64] = self._cache[key]
        return result

    def quantiles(self, name: str, qs: Sequence[float], exact: bool) -> list[NDArray[np.float64]]:
        if exact:
            return self._exact_quantiles(name, qs)
        groups: list[NDArray[np.int64]] = []
        codes: list[NDArray[np.uint16]] = []
        weights: list[NDArray[np.int64] | None] = []
        for p in self.raw:
            self.check()
            groups.append(p.gid)
            codes.append(p.codes(name))
            weights.append(None)
        for q in self.rollups:
            self.check()
            g, c, w = q.entries(name)
            groups.append(g)
            codes.append(c)
            weights.append(w)
        if not groups:
            return [np.full(self.groups, np.nan) for _ in qs]
        weight = None
        if any(w is not None for w in weights):
            weight = np.concatenate(
                [
                    np.ones(g.size, dtype=np.int64) if w is None else w
                    for g, w in zip(groups, weights, strict=True)
                ]
            )
        return group_quantiles(
            np.concatenate(groups),
            np.concatenate(codes),
            weight,
            self.groups,
            [q / 100.0 for q in qs],
            self.extreme(name, True),
            self.extreme(name, False),
        )

    def _exact_quantiles(self, name: str, qs: Sequence[float]) -> list[NDArray[np.float64]]:
        """Linear interpolation between order statistics (pandas' and numpy's default)."""
        gid = np.concatenate([p.gid for p in self.raw]) if self.raw else np.empty(0, dtype=np.int64)
        values = (
            np.concatenate([p.column(name) for p in self.raw]).astype(np.float64)
            if self.raw
            else np.empty(0)
        )
        order = np.lexsort((values, gid))
        ordered = values[order]
        counts = np.bincount(gid, minlength=self.groups)
        starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
        present = counts > 0
        out = []
        for q in qs:
            result = np.full(self.groups, np.nan)
            rank = (q / 100.0) * (counts[present] - 1)
            below = np.floor(rank).astype(np.int64)
            above = np.ceil(rank).astype(np.int64)
            low = ordered[starts[present] + below]
            high = ordered[starts[present] + above]
            result[present] = low + (rank - below) * (high - low)
            out.append(result)
        return out

    def distinct(self, f: FieldSpec) -> NDArray[np.float64]:
        pairs_group, pairs_value = [], []
        for p in self.raw:
            self.check()
            pairs_group.append(p.gid)
            pairs_value.append(
                p.column(f.name).astype(np.float64 if f.kind is Kind.FLOAT else np.int64)
            )
        for q in self.rollups:
            self.check()
            pairs_group.append(q.gid)
            pairs_value.append(q.dim(f.name).astype(np.int64))
        if not pairs_group:
            return np.zeros(self.groups)
        gid = np.concatenate(pairs_group)
        value = np.concatenate(pairs_value)
        if f.coded:  # nulls are not values
            keep = value != -1
            gid, value = gid[keep], value[keep]
        order = np.lexsort((value, gid))
        gid, value = gid[order], value[order]
        new = np.ones(gid.size, dtype=np.bool_)
        new[1:] = (gid[1:] != gid[:-1]) | (value[1:] != value[:-1])
        return self._bincount(gid[new])

    def first_last(self, f: FieldSpec, last: bool) -> NDArray[Any]:
        """The value of ``f`` of each group's earliest (latest) event; ties go to arrival order."""
        gid = np.concatenate([p.gid for p in self.raw]) if self.raw else np.empty(0, dtype=np.int64)
        ts = np.concatenate([p.ts for p in self.raw]) if self.raw else np.empty(0, dtype=np.int64)
        values = (
            np.concatenate([p.column(f.name) for p in self.raw])
            if self.raw
            else np.empty(0, dtype=np.int64)
        )
        order = np.lexsort((ts, gid))
        counts = np.bincount(gid, minlength=self.groups)
        ends = np.cumsum(counts)
        present = counts > 0
        pick = (ends - 1) if last else (ends - counts)
        if f.kind is Kind.FLOAT:
            out: NDArray[Any] = np.full(self.groups, np.nan)
        else:  # integers, and codes of strings and booleans (-1: null)
            out = np.full(self.groups, -1 if f.coded else 0, dtype=np.int64)
        out[present] = values[order[pick[present]]]
        return out


def _group_arrays(r: Resolved) -> int:
    """About how many per-group arrays the aggregations hold at once (count, sums, outputs)."""
    return 4 + sum(3 + len(a.percentiles) for a in r.aggregations)


def _compute(r: Resolved, snap: MetricSnapshot, budget: QueryBudget, prefer: Prefer) -> _Computed:
    limits = budget.limits
    budget.phase = "planning"
    choice = choose_segments(r, snap, need_entries=_needs_entries(r), prefer=prefer)
    space = _Space(r, snap, choice.start_us, choice.end_us)
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
    raw, rollups, scanned = _parts(r, snap, space, choice, budget)
    budget.phase = "grouping"
    per_group = 8 * _group_arrays(r)
    # key -> dense group id: the key itself when the space is small, else a rank among keys seen
    if space.size <= _DENSE_GROUPS and budget.fits(space.size * per_group):
        groups = space.size
        for p in raw:
            p.gid = p.key
        for q in rollups:
            q.gid_all = q.key_all
            q.gid = q.key_all[q.index]
        group_keys = np.arange(groups, dtype=np.int64)
    else:
        keys = [p.key for p in raw] + [q.key_all[q.index] for q in rollups]
        group_keys = np.unique(np.concatenate(keys)) if keys else np.empty(0, dtype=np.int64)
        groups = int(group_keys.size)
        if groups > limits.max_groups:
            _too_many(groups, limits)
        budget.reserve(groups * per_group, "/groupBy", f"{groups:,} groups")
        for p in raw:
            p.gid = np.searchsorted(group_keys, p.key)
        for q in rollups:
            q.gid_all = np.where(q.key_all >= 0, np.searchsorted(group_keys, q.key_all), -1)
            q.gid = q.gid_all[q.index]
    budget.check()
    agg = _Aggregator(raw, rollups, groups, snap, budget)
    count = agg.count()
    present = np.flatnonzero(count > 0)
    if present.size > limits.max_groups:
        _too_many(int(present.size), limits)
    if groups > 4 * present.size and groups > 65536:  # mostly empty: renumber the live groups
        renumber = np.full(groups, -1, dtype=np.int64)
        renumber[present] = np.arange(present.size)
        for p in raw:
            p.gid = renumber[p.gid]
        for q in rollups:
            q.gid_all = np.where(q.gid_all >= 0, renumber[np.maximum(q.gid_all, 0)], -1)
            q.gid = q.gid_all[q.index]
        group_keys = group_keys[present]
        groups = int(present.size)
        agg = _Aggregator(raw, rollups, groups, snap, budget)
        count = agg.count()
        present = np.arange(groups)
    starts, codes = space.decode(group_keys[present])
    columns: dict[str, NDArray[Any]] = {}
    kinds: dict[str, ColumnKind] = {}
    code_columns: dict[str, NDArray[np.int64]] = {}
    for f, code in zip(r.group_fields, codes, strict=True):
        code_columns[f.name] = code
        columns[f.name] = _decode(f, code, snap)
        kinds[f.name] = "object"
    if r.interval_us is not None:
        columns["bucket"] = starts
        kinds["bucket"] = "bucket"
    percentiles = False
    budget.phase = "aggregating"
    for a in r.aggregations:
        budget.check()
        values = _aggregate(a, agg, r, space, choice, present, starts)
        if a.op in _PERCENTILE_OPS:
            percentiles = True
        for key, column in zip(a.keys, values, strict=True):
            if a.op in ("first", "last") and a.field is not None and a.field.coded:
                code_columns[key] = column.astype(np.int64)
                columns[key] = _decode(a.field, column.astype(np.int64), snap)
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
    return _Computed(
        columns, kinds, code_columns, bucket_index, series, scanned, choice, percentiles
    )


def _too_many(groups: int, limits: Limits) -> None:
    raise InputError(
        "/groupBy",
        f"the query makes {groups} groups",
        [
            f"at most {limits.max_groups} (M1_QUERY_MAX_GROUPS)",
            "fewer groupBy fields",
            "a coarser interval",
            "more filters",
        ],
    )


def _decode(f: FieldSpec, codes: NDArray[np.int64], snap: MetricSnapshot) -> NDArray[np.object_]:
    if f.kind is Kind.STR:
        return snap.dictionaries[f.name].decode(codes, snap.sizes[f.name])
    table = np.array([False, True, None], dtype=object)
    decoded: NDArray[np.object_] = table[np.where(codes < 0, 2, codes)]
    return decoded


def _aggregate(
    a: AggregationPlan,
    agg: _Aggregator,
    r: Resolved,
    space: _Space,
    choice: Choice,
    present: NDArray[np.intp],
    starts: NDArray[np.int64],
) -> list[NDArray[Any]]:
    f = a.field
    op = a.op
    with np.errstate(invalid="ignore", divide="ignore"):
        if op == "count":
            counted = agg.count() if f is None else agg.count_where(None, f)
            return [counted[present].astype(np.int64)]
        if op == "ratio":
            return [(agg.count_where(a.where) / agg.count())[present]]
        if op == "distinct":
            assert f is not None
            return [agg.distinct(f)[present].astype(np.int64)]
        if op in ("first", "last"):
            assert f is not None
            return [agg.first_last(f, op == "last")[present]]
        if op == "rate":
            amount = agg.count() if f is None else agg.sum(f.name)
            return [amount[present] / _seconds(r, space, choice, starts)]
        assert f is not None
        name = f.name
        if op == "sum":
            total = agg.sum(name)[present]
            fits = f.kind is Kind.INT and bool(np.all(np.abs(total) < _INT64_SPAN))
            return [total.astype(np.int64) if fits else total]  # past int64: a float, not wrapped
        if op == "avg":
            return [(agg.sum(name) / agg.count())[present]]
        if op in ("min", "max"):
            extreme = agg.extreme(name, op == "min")[present]
            return [extreme.astype(np.int64) if f.kind is Kind.INT else extreme]
        if op in ("variance", "stddev"):
            count = agg.count()[present]
            variance = np.where(count > 1, agg.m2(name)[present] / (count - 1), np.nan)
            variance = np.maximum(variance, 0.0)
            return [variance if op == "variance" else np.sqrt(variance)]
        return [q[present] for q in agg.quantiles(name, a.percentiles, r.exact)]


def _seconds(
    r: Resolved, space: _Space, choice: Choice, starts: NDArray[np.int64]
) -> NDArray[np.float64]:
    """Length of each group's bucket within the range (the whole range without an interval)."""
    if r.interval_us is None:
        return np.full(starts.size, (choice.end_us - choice.start_us) / 1e6)
    begin = np.maximum(starts, choice.start_us)
    end = np.minimum(starts + r.interval_us, choice.end_us)
    seconds: NDArray[np.float64] = (end - begin) / 1e6
    return seconds


# -- having, order, detection ----------------------------------------------------------------


def _result_column(done: _Computed, name: str) -> NDArray[Any]:
    return done.codes[name] if name in done.codes else done.columns[name]


def _having_mask(r: Resolved, done: _Computed, snap: MetricSnapshot) -> NDArray[np.bool_]:
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
    name: str, descending: bool, r: Resolved, done: _Computed, snap: MetricSnapshot
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


def _order(r: Resolved, done: _Computed, snap: MetricSnapshot) -> NDArray[np.intp]:
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


def _detect(
    r: Resolved, done: _Computed, snap: MetricSnapshot, budget: QueryBudget
) -> tuple[list[Anomaly], int, Trend | None]:
    """Anomalies per group series (the strongest ``M1_QUERY_MAX_ROWS``, by bucket), their
    total, and the trend of all groups together."""
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
            source = _compute(whole, snap, budget, "auto")
            budget.phase = "detecting"
        budget.reserve(buckets * 8 * 4, "/interval", f"a trend over {buckets:,} buckets")
        plan = r.outputs[t.field]
        values = _series(
            source.columns[t.field], source.bucket_index, buckets, plan.op in _ADDITIVE
        )
        fit = detect.trend(values, significance=t.significance)
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
    r: Resolved, done: _Computed, budget: QueryBudget, buckets: int, first_bucket: int
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
        buckets * 8 * 3 + detect.BLOCK_CELLS * 8 * 4,
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
        index, value, score = detect.anomaly_scores(
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
        bucket = to_datetime((first_bucket + int(index[k])) * r.interval_us)
        out.append(Anomaly(bucket, float(value[k]), round(float(score[k]), 6), a.field, group))
    return out, total


def _series(
    column: NDArray[Any], index: NDArray[np.int64], buckets: int, additive: bool
) -> NDArray[np.float64]:
    """A dense series over the buckets: 0 (additive) or NaN (missing) where no group row is."""
    values = np.full(buckets, 0.0 if additive else np.nan)
    values[index] = column.astype(np.float64)
    return values
