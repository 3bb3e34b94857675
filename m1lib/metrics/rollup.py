"""Rollups: per time bucket and combination of a metric's dimensions, mergeable summaries.

A rollup row holds, for the events of one bucket and one combination of dimension values, the
event count and per measure: sum, min, max, M2 (the sum of squared deviations from the row's mean:
variances merge exactly with it, where a raw sum of squares loses precision) and a quantile sketch
(sparse: the occupied sketch codes and their counts). Rows of any blocks, replicas or batches merge
by these rules, so a query over 24 hours reads 24 one-hour rows per group instead of the events.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from m1lib.metrics.columns import RawChunk
from m1lib.metrics.schema import MetricSpec
from m1lib.metrics.sketch import NUM_CODES

__all__ = ["MeasureRollup", "RollupBlock", "group_sorted", "merge_blocks", "rollup_raw"]

_RADIX_LIMIT = 1 << 62


@dataclass(frozen=True)
class MeasureRollup:
    """One measure's summaries per row; the sketch entries of row ``i`` are
    ``codes[offsets[i]:offsets[i + 1]]`` with their ``counts``."""

    sum: NDArray[np.float64]
    m2: NDArray[np.float64]
    min: NDArray[np.float64]
    max: NDArray[np.float64]
    offsets: NDArray[np.int64]
    codes: NDArray[np.uint16]
    counts: NDArray[np.int64]

    @property
    def nbytes(self) -> int:
        arrays = (self.sum, self.m2, self.min, self.max, self.offsets, self.codes, self.counts)
        return sum(int(a.nbytes) for a in arrays)


@dataclass(frozen=True)
class RollupBlock:
    """Rollup rows of one metric at one resolution, sorted by bucket start.

    A :class:`~m1lib.metrics.slab.TimeSlab` of rows, each at its bucket's start.
    """

    resolution_us: int
    bucket: NDArray[np.int64]
    dims: Mapping[str, NDArray[Any]]
    count: NDArray[np.int64]
    measures: Mapping[str, MeasureRollup]

    @property
    def size(self) -> int:
        return int(self.bucket.size)

    @property
    def start_us(self) -> int:
        return int(self.bucket[0])

    @property
    def end_us(self) -> int:
        """The end of the last bucket."""
        return int(self.bucket[-1]) + self.resolution_us

    @property
    def entries(self) -> int:
        return sum(int(m.codes.size) for m in self.measures.values())

    @property
    def nbytes(self) -> int:
        total = int(self.bucket.nbytes) + int(self.count.nbytes)
        total += sum(int(a.nbytes) for a in self.dims.values())
        return total + sum(m.nbytes for m in self.measures.values())

    def bounds(self, start_us: int, end_us: int) -> tuple[int, int]:
        """Row range of buckets starting in ``[start_us, end_us)``."""
        lo, hi = np.searchsorted(self.bucket, (start_us, end_us), side="left")
        return int(lo), int(hi)

    def slice(self, lo: int, hi: int, *, copy: bool = False) -> RollupBlock:
        """Rows ``lo:hi`` as a block of their own: views, or copies so that the rest can be freed."""

        def cut(array: NDArray[Any], start: int, stop: int) -> NDArray[Any]:
            part = array[start:stop]
            return part.copy() if copy else part

        measures = {}
        for name, m in self.measures.items():
            e0, e1 = int(m.offsets[lo]), int(m.offsets[hi])
            measures[name] = MeasureRollup(
                cut(m.sum, lo, hi),
                cut(m.m2, lo, hi),
                cut(m.min, lo, hi),
                cut(m.max, lo, hi),
                m.offsets[lo : hi + 1] - e0,
                cut(m.codes, e0, e1),
                cut(m.counts, e0, e1),
            )
        return RollupBlock(
            self.resolution_us,
            cut(self.bucket, lo, hi),
            {name: cut(array, lo, hi) for name, array in self.dims.items()},
            cut(self.count, lo, hi),
            measures,
        )


def group_sorted(keys: Sequence[NDArray[Any]]) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """Sort rows by ``keys`` (first most significant); returns the order and each group's start.

    Small key spaces combine into one int64 and sort once; others fall back to lexsort.
    """
    n = int(keys[0].size)
    if n == 0:
        return np.empty(0, dtype=np.intp), np.empty(0, dtype=np.intp)
    lows = [int(k.min()) for k in keys]
    spans = [int(k.max()) - low + 1 for k, low in zip(keys, lows, strict=True)]
    total = 1
    for span in spans:
        total *= span
    if total < _RADIX_LIMIT:
        combined = np.zeros(n, dtype=np.int64)
        for key, low, span in zip(keys, lows, spans, strict=True):
            combined *= span
            combined += key
            combined -= low
        order = np.argsort(combined, kind="stable")
        ordered = combined[order]
        changed = ordered[1:] != ordered[:-1]
    else:
        order = np.lexsort(tuple(reversed(keys)))
        changed = np.zeros(n - 1, dtype=np.bool_)
        for key in keys:
            ordered_key = key[order]
            changed |= ordered_key[1:] != ordered_key[:-1]
    starts = np.flatnonzero(np.r_[True, changed])
    return order, starts


def _reduce(
    resolution_us: int,
    spec: MetricSpec,
    bucket: NDArray[np.int64],
    dims: Mapping[str, NDArray[Any]],
    count: NDArray[np.int64],
    measures: Mapping[str, MeasureRollup],
) -> RollupBlock:
    """Merge rows with equal (bucket, dimensions) into one row each, sorted by bucket."""
    names = list(spec.dimensions)
    order, starts = group_sorted([bucket // resolution_us, *(dims[n] for n in names)])
    sizes = np.diff(np.r_[starts, order.size])
    count_sorted = count[order]
    group_count = np.add.reduceat(count_sorted, starts) if order.size else count_sorted
    out_measures: dict[str, MeasureRollup] = {}
    group_of_sorted_row = np.repeat(np.arange(starts.size, dtype=np.int64), sizes)
    group_of_row = np.empty(order.size, dtype=np.int64)
    group_of_row[order] = group_of_sorted_row
    for name, m in measures.items():
        out_measures[name] = _reduce_measure(
            m, order, starts, sizes, count_sorted, group_count, group_of_row
        )
    first_rows = order[starts]
    return RollupBlock(
        resolution_us,
        bucket[first_rows],
        {n: dims[n][first_rows] for n in names},
        group_count,
        out_measures,
    )


def _reduce_measure(
    m: MeasureRollup,
    order: NDArray[np.intp],
    starts: NDArray[np.intp],
    sizes: NDArray[np.int64],
    count_sorted: NDArray[np.int64],
    group_count: NDArray[np.int64],
    group_of_row: NDArray[np.int64],
) -> MeasureRollup:
    if order.size == 0:
        return m
    sums = m.sum[order]
    group_sum = np.add.reduceat(sums, starts)
    group_mean = group_sum / group_count
    deviation = sums / count_sorted - np.repeat(group_mean, sizes)
    group_m2 = np.add.reduceat(m.m2[order] + count_sorted * deviation * deviation, starts)
    group_min = np.minimum.reduceat(m.min[order], starts)
    group_max = np.maximum.reduceat(m.max[order], starts)
    # sketch entries: relabel each with its row's group, then add counts per (group, code)
    per_row = np.diff(m.offsets)
    cell = np.repeat(group_of_row, per_row) * NUM_CODES + m.codes
    entry_order = np.argsort(cell, kind="stable")
    sorted_cells = cell[entry_order]
    first = np.flatnonzero(np.r_[True, sorted_cells[1:] != sorted_cells[:-1]])
    cells = sorted_cells[first]
    counts = np.add.reduceat(m.counts[entry_order], first)
    offsets = np.searchsorted(cells // NUM_CODES, np.arange(starts.size + 1), side="left")
    return MeasureRollup(
        group_sum,
        group_m2,
        group_min,
        group_max,
        offsets.astype(np.int64),
        (cells % NUM_CODES).astype(np.uint16),
        counts.astype(np.int64),
    )


def rollup_raw(chunk: RawChunk, spec: MetricSpec, resolution_us: int) -> RollupBlock:
    """Rollup rows of raw events: one per (bucket, dimension values)."""
    n = chunk.size
    ones = np.ones(n, dtype=np.int64)
    zeros = np.zeros(n, dtype=np.float64)
    offsets = np.arange(n + 1, dtype=np.int64)
    measures = {}
    for name in spec.measures:
        values = chunk.columns[name].astype(np.float64, copy=False)
        measures[name] = MeasureRollup(
            values, zeros, values, values, offsets, chunk.codes[name], ones
        )
    bucket = chunk.ts - chunk.ts % resolution_us
    dims = {name: chunk.columns[name] for name in spec.dimensions}
    return _reduce(resolution_us, spec, bucket, dims, ones, measures)


def merge_blocks(blocks: Sequence[RollupBlock], spec: MetricSpec) -> RollupBlock:
    """One block of several of the same resolution, equal rows merged."""
    if len(blocks) == 1:
        return blocks[0]
    resolution = blocks[0].resolution_us
    measures = {}
    for name in spec.measures:
        parts = [b.measures[name] for b in blocks]
        shift = np.cumsum([0] + [int(p.codes.size) for p in parts[:-1]])
        offsets = np.concatenate(
            [p.offsets[:-1] + s for p, s in zip(parts, shift, strict=True)]
            + [np.array([int(shift[-1]) + int(parts[-1].codes.size)], dtype=np.int64)]
        )
        measures[name] = MeasureRollup(
            np.concatenate([p.sum for p in parts]),
            np.concatenate([p.m2 for p in parts]),
            np.concatenate([p.min for p in parts]),
            np.concatenate([p.max for p in parts]),
            offsets,
            np.concatenate([p.codes for p in parts]),
            np.concatenate([p.counts for p in parts]),
        )
    return _reduce(
        resolution,
        spec,
        np.concatenate([b.bucket for b in blocks]),
        {n: np.concatenate([b.dims[n] for b in blocks]) for n in spec.dimensions},
        np.concatenate([b.count for b in blocks]),
        measures,
    )
