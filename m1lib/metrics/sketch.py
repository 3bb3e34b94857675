"""A mergeable quantile sketch: log-spaced buckets (DDSketch-style) with 1 % relative error.

Every value maps to a 16-bit *code*: the index of the logarithmic bucket ``(g^(k-1), g^k]`` holding
it (mirrored for negative values, one code for zero), with ``g = (1 + a) / (1 - a)``. A bucket's
representative value ``2 g^k / (g + 1)`` is within ``a`` of everything in the bucket, so the value
at any rank is known within ``a`` relative error from the bucket counts alone. Counts add, so
sketches of rollup rows, replicas and raw events merge by addition: percentiles never rescan raw
events. Codes are computed once per event at ingest and stored next to the value.

The stated bound is :data:`RELATIVE_ERROR` (1 %); buckets are built with a slightly smaller ``a``
so floating-point rounding at bucket edges cannot push an estimate past it. Percentiles
interpolate linearly between ranks (pandas' and numpy's default), and for values of one sign the
interpolated estimate keeps the bound against the exact interpolated percentile. Magnitudes
between about 1e-18 and 6e17 are covered; values beyond are clamped to the end buckets.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Final

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "NUM_CODES",
    "RELATIVE_ERROR",
    "codes_of",
    "group_quantiles",
    "representatives",
]

RELATIVE_ERROR: Final = 0.01
_ALPHA = 0.0099
GAMMA: Final = (1 + _ALPHA) / (1 - _ALPHA)
_INV_LOG_GAMMA = 1.0 / math.log(GAMMA)
MAX_KEY: Final = 2047
ZERO_CODE: Final = 4096
_POSITIVE_BASE = 6144  # code of key 0 for positive values
_NEGATIVE_BASE = 2048  # code of key 0 for negative values (mirrored: bigger |x|, smaller code)
NUM_CODES: Final = 8192
_DENSE_CELLS = 1 << 23  # groups x codes counted in one dense array; beyond it, sort instead
_DENSE_PER_ENTRY = 8  # ... and only while the cells are few next to the entries sorted otherwise


def _table() -> NDArray[np.float64]:
    keys = np.arange(-MAX_KEY, MAX_KEY + 1, dtype=np.float64)
    magnitude = 2.0 * np.power(GAMMA, keys) / (GAMMA + 1.0)
    table = np.zeros(NUM_CODES, dtype=np.float64)
    table[_POSITIVE_BASE - MAX_KEY : _POSITIVE_BASE + MAX_KEY + 1] = magnitude
    table[_NEGATIVE_BASE - MAX_KEY : _NEGATIVE_BASE + MAX_KEY + 1] = -magnitude[::-1]
    return table


_REPRESENTATIVE = _table()


def codes_of(values: NDArray[np.float64] | NDArray[np.int64]) -> NDArray[np.uint16]:
    """The sketch code of each value (monotone in the value); values must be finite."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return np.empty(0, dtype=np.uint16)
    if x.min() > 0.0:  # the common case: latencies, costs
        key = np.ceil(np.log(x) * _INV_LOG_GAMMA)
        np.clip(key, -MAX_KEY, MAX_KEY, out=key)
        key += _POSITIVE_BASE
        return key.astype(np.uint16)
    magnitude = np.abs(x)
    with np.errstate(divide="ignore"):
        key = np.ceil(np.log(magnitude) * _INV_LOG_GAMMA)
    np.clip(key, -MAX_KEY, MAX_KEY, out=key)
    code = np.where(x > 0, _POSITIVE_BASE + key, np.where(x < 0, _NEGATIVE_BASE - key, ZERO_CODE))
    return code.astype(np.uint16)


def representatives(codes: NDArray[np.integer]) -> NDArray[np.float64]:
    """The value each code stands for (within the relative error of every value it holds)."""
    values: NDArray[np.float64] = _REPRESENTATIVE[codes]
    return values


def group_quantiles(
    group: NDArray[np.int64],
    codes: NDArray[np.uint16],
    weights: NDArray[np.int64] | None,
    groups: int,
    quantiles: Sequence[float],
    low: NDArray[np.float64],
    high: NDArray[np.float64],
) -> list[NDArray[np.float64]]:
    """Per group (``0 <= group < groups``) and quantile ``q`` in [0, 1], the estimated value.

    ``weights`` is how many events each entry counts (None: one each). Estimates are clamped to
    the group's exact ``low``/``high`` (min and max), which only brings them closer. Groups without
    events get NaN.
    """
    out = [np.full(groups, np.nan) for _ in quantiles]
    if group.size == 0 or groups == 0:
        return out
    first = int(codes.min())
    width = int(codes.max()) - first + 1
    cells = np.multiply(group, width, dtype=np.int64)
    cells += codes
    cells -= first
    if groups * width <= min(_DENSE_CELLS, _DENSE_PER_ENTRY * group.size):
        counts = np.bincount(cells, weights=weights, minlength=groups * width)
        cumulative = counts.astype(np.int64, copy=False)
        np.cumsum(cumulative, out=cumulative)
        totals = cumulative[width - 1 :: width]
        code_of_cell: NDArray[np.int64] | None = None
    else:  # too many groups x codes to count densely: sort the occupied cells instead
        order = np.argsort(cells, kind="stable")
        sorted_cells = cells[order]
        starts = np.flatnonzero(np.r_[True, sorted_cells[1:] != sorted_cells[:-1]])
        unique_cells = sorted_cells[starts]
        if weights is None:
            cell_counts = np.diff(np.r_[starts, sorted_cells.size])
        else:
            cell_counts = np.add.reduceat(weights[order], starts)
        cumulative = np.cumsum(cell_counts.astype(np.int64, copy=False))
        cell_group = unique_cells // width
        last_of_group = np.searchsorted(cell_group, np.arange(groups), side="right") - 1
        totals = np.where(last_of_group >= 0, cumulative[np.maximum(last_of_group, 0)], 0)
        code_of_cell = unique_cells
    before = np.empty_like(totals)
    before[0] = 0
    before[1:] = totals[:-1]
    n = totals - before
    present = np.flatnonzero(n > 0)
    if present.size == 0:
        return out
    n_present = n[present]
    base = before[present]
    lows, highs = low[present], high[present]
    for slot, q in enumerate(quantiles):
        rank = q * (n_present - 1).astype(np.float64)
        below = np.floor(rank)
        fraction = rank - below
        estimates = []
        for target in (below, np.ceil(rank)):
            index = np.searchsorted(cumulative, base + target.astype(np.int64), side="right")
            if code_of_cell is None:  # dense: cell index = group * width + code - first
                code = index - present * width + first
            else:
                code = code_of_cell[index] % width + first
            estimate = np.clip(_REPRESENTATIVE[code], lows, highs)
            # the first and last rank are the exact min and max
            estimate = np.where(target == 0, lows, estimate)
            estimates.append(np.where(target == n_present - 1, highs, estimate))
        out[slot][present] = estimates[0] + fraction * (estimates[1] - estimates[0])
    return out
