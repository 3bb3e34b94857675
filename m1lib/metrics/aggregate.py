"""Per-group reductions over the parts of a query, and each aggregation's output from them.

Rollup rows carry summaries (count, sum, min, max, M2, sketch entries) and raw events are rows of
one event, so both merge the same way: means and variances by the exact parallel formulas,
percentiles by adding sketch counts. Every reduction is a ``bincount``-style pass over the parts'
group ids, so the work is a few passes over arrays whatever the number of groups.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from m1lib.metrics.budget import QueryBudget
from m1lib.metrics.filters import Node, evaluate
from m1lib.metrics.grouping import RawPart, RollupPart
from m1lib.metrics.plan import AggregationPlan, Choice, Resolved
from m1lib.metrics.schema import FieldSpec, Kind
from m1lib.metrics.sketch import group_quantiles
from m1lib.metrics.store import MetricSnapshot

__all__ = ["PERCENTILE_OPS", "Aggregator", "aggregate", "group_arrays"]

_INT64_SPAN: Final = float(1 << 63)
PERCENTILE_OPS: Final = frozenset({"median", "p50", "p90", "p95", "p99", "percentiles"})


class Aggregator:
    """Per-group reductions over the parts, each computed once and shared by the outputs."""

    def __init__(
        self,
        raw: list[RawPart],
        rollups: list[RollupPart],
        groups: int,
        snap: MetricSnapshot,
        budget: QueryBudget,
    ) -> None:
        self.raw = raw
        self.rollups = rollups
        self.parts: list[RawPart | RollupPart] = [*raw, *rollups]
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
            for part in self.parts:
                self.check()
                total += self._bincount(part.gid, part.weights)
            self._cache[("count",)] = total
        result: NDArray[np.float64] = self._cache[("count",)]
        return result

    def count_where(self, node: Node | None, f: FieldSpec | None = None) -> NDArray[np.float64]:
        """Events that match ``node`` (and, with ``f``, have a value of ``f``)."""
        total = np.zeros(self.groups)
        snap = self.snap
        for part in self.parts:
            self.check()
            mask = np.ones(part.gid.size, dtype=np.bool_)
            if node is not None:
                mask &= evaluate(node, part.column, snap.dictionaries, snap.sizes, part.gid.size)
            if f is not None and f.coded:
                mask &= part.column(f.name) != -1
            weights = part.weights
            total += self._bincount(part.gid[mask], None if weights is None else weights[mask])
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
        dtype = np.float64 if f.kind is Kind.FLOAT else np.int64  # rollups: dimension codes
        for part in self.parts:
            self.check()
            pairs_group.append(part.gid)
            pairs_value.append(part.column(f.name).astype(dtype))
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


def group_arrays(r: Resolved) -> int:
    """About how many per-group arrays the aggregations hold at once (count, sums, outputs)."""
    return 4 + sum(3 + len(a.percentiles) for a in r.aggregations)


def aggregate(
    a: AggregationPlan,
    agg: Aggregator,
    r: Resolved,
    choice: Choice,
    present: NDArray[np.intp],
    starts: NDArray[np.int64],
) -> list[NDArray[Any]]:
    """The output columns of ``a`` (one per key) for the ``present`` groups, bucket ``starts``."""
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
            return [amount[present] / _seconds(r, choice, starts)]
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


def _seconds(r: Resolved, choice: Choice, starts: NDArray[np.int64]) -> NDArray[np.float64]:
    """Length of each group's bucket within the range (the whole range without an interval)."""
    if r.interval_us is None:
        return np.full(starts.size, (choice.end_us - choice.start_us) / 1e6)
    begin = np.maximum(starts, choice.start_us)
    end = np.minimum(starts + r.interval_us, choice.end_us)
    seconds: NDArray[np.float64] = (end - begin) / 1e6
    return seconds
