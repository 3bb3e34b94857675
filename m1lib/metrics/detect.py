"""Detection over bucket series: a significant trend, and anomalies against a moving window.

Both are plain functions of a sequence of numbers (None for a bucket without a value), so they work
on any query output and are easy to check by hand. Neither ever returns NaN or infinity: a flat
series has no trend and no anomaly, a series too short for the test says so, and a point that
leaves a perfectly flat window gets the capped score :data:`SCORE_CAP`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from numpy.typing import NDArray

__all__ = [
    "BLOCK_CELLS",
    "SCORE_CAP",
    "Outlier",
    "TrendFit",
    "anomalies",
    "anomaly_scores",
    "as_series",
    "student_t_two_sided",
    "trend",
]

SCORE_CAP: Final = 1000.0
_MAD_SCALE = 0.6744897501960817  # Phi^-1(0.75): MAD of a normal sample is 0.6745 sigma
_MEAN_AD_SCALE = 1.2533141373155003  # sqrt(pi/2): mean absolute deviation to sigma
_TINY = 1e-12
BLOCK_CELLS: Final = 1 << 20  # window values scored at once: about 8 MB per temporary array


@dataclass(frozen=True)
class TrendFit:
    direction: Literal["up", "down", "flat"]
    slope: float
    change_pct: float | None
    p_value: float | None
    r_squared: float | None
    points: int


@dataclass(frozen=True)
class Outlier:
    index: int
    value: float
    score: float


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        for numerator in (
            m * (b - m) * x / ((a + m2 - 1) * (a + m2)),
            -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def student_t_two_sided(t: float, df: int) -> float:
    """P(|T| >= |t|) for Student's t with ``df`` degrees of freedom."""
    if math.isinf(t):
        return 0.0
    return min(1.0, max(0.0, _betainc(df / 2.0, 0.5, df / (df + t * t))))


def as_series(values: Sequence[float | None] | NDArray[np.float64]) -> NDArray[np.float64]:
    """A series as float64 with NaN for a missing bucket (None, NaN and infinities are missing)."""
    if isinstance(values, np.ndarray):
        return values.astype(np.float64, copy=False)
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


def trend(
    values: Sequence[float | None] | NDArray[np.float64], *, significance: float = 0.05
) -> TrendFit:
    """Least-squares slope over the bucket index, tested against zero with a t-test.

    Missing buckets (None) are left out; under 3 points there is no test and the direction is flat.
    """
    series = as_series(values)
    finite = np.isfinite(series)
    n = int(np.count_nonzero(finite))
    if n < 2:
        return TrendFit("flat", 0.0, 0.0 if n else None, None, None, n)
    x = np.flatnonzero(finite).astype(np.float64)
    raw = series[finite]
    scale = float(np.abs(raw).max()) or 1.0
    y = raw / scale  # the test is scale-free; this keeps sums of huge values finite
    dx = x - x.mean()
    dy = y - y.mean()
    sxx = float(dx @ dx)
    syy = float(dy @ dy)
    slope = float(dx @ dy) / sxx
    if abs(slope) * (x[-1] - x[0]) <= _TINY:
        slope = 0.0  # rounding noise on a flat series
    first = float(y.mean()) + slope * (x[0] - x.mean())
    last = first + slope * (x[-1] - x[0])
    if slope == 0.0:
        change: float | None = 0.0
    elif abs(first) > _TINY:
        change = float((last - first) / abs(first) * 100.0)
    else:
        change = None
    if n < 3:
        return TrendFit("flat", slope * scale, change, None, None, n)
    residual = max(0.0, syy - slope * slope * sxx)
    r_squared = 1.0 if syy == 0.0 else max(0.0, min(1.0, 1.0 - residual / syy))
    if slope == 0.0:
        p_value = 1.0
    elif residual <= _TINY * max(syy, _TINY):
        p_value = 0.0  # a perfect line
    else:
        standard_error = math.sqrt(residual / (n - 2) / sxx)
        p_value = student_t_two_sided(slope / standard_error, n - 2) if standard_error else 0.0
    direction: Literal["up", "down", "flat"] = "flat"
    if p_value < significance:
        direction = "up" if slope > 0 else "down"
    return TrendFit(direction, slope * scale, change, p_value, r_squared, n)


def anomalies(
    values: Sequence[float | None] | NDArray[np.float64],
    *,
    method: Literal["zscore", "mad"] = "zscore",
    window: int = 10,
    threshold: float = 2.0,
    check: Callable[[], None] | None = None,
) -> list[Outlier]:
    """Points whose score against the ``window`` points before them reaches ``threshold``.

    ``zscore``: (x - mean) / sample standard deviation of the window. ``mad``: 0.6745 (x - median)
    / MAD, robust to earlier outliers in the window (the mean absolute deviation stands in when the
    MAD is 0). Missing points are skipped and windows are made of the points present.
    """
    index, value, score = anomaly_scores(
        as_series(values), method=method, window=window, threshold=threshold, check=check
    )
    return [
        Outlier(i, v, round(s, 6))
        for i, v, s in zip(index.tolist(), value.tolist(), score.tolist(), strict=True)
    ]


def anomaly_scores(
    series: NDArray[np.float64],
    *,
    method: Literal["zscore", "mad"] = "zscore",
    window: int = 10,
    threshold: float = 2.0,
    check: Callable[[], None] | None = None,
) -> tuple[NDArray[np.intp], NDArray[np.float64], NDArray[np.float64]]:
    """:func:`anomalies` as arrays (bucket index, value, unrounded score), for any length.

    The windows are evaluated in blocks of about :data:`BLOCK_CELLS` values, so memory stays
    bounded whatever the series and window, and ``check`` (a query's budget) runs between blocks.
    The work is about ``present points x window``: callers bound that before they start.
    """
    present = np.flatnonzero(np.isfinite(series))
    if present.size <= window:
        empty = np.empty(0)
        return np.empty(0, dtype=np.intp), empty, empty
    y = series[present]
    y = y / (float(np.abs(y).max()) or 1.0)  # scores are scale-free; this keeps huge values finite
    count = y.size - window  # window k is y[k : k + window]; it scores point k + window
    score = np.empty(count)
    block = max(1, BLOCK_CELLS // window)
    for lo in range(0, count, block):
        if check is not None:
            check()
        hi = min(count, lo + block)
        windows = sliding_window_view(y[lo : hi + window - 1], window)
        score[lo:hi] = _scores(windows, y[lo + window : hi + window], method)
    hits = np.flatnonzero(np.abs(score) >= threshold)
    index = present[hits + window]
    return index, series[index], score[hits]


def _scores(
    windows: NDArray[np.float64], current: NDArray[np.float64], method: str
) -> NDArray[np.float64]:
    if method == "zscore":
        center = windows.mean(axis=1)
        spread = windows.std(axis=1, ddof=1)
    else:
        center = np.median(windows, axis=1)
        distance = np.abs(windows - center[:, None])
        mad = np.median(distance, axis=1) / _MAD_SCALE
        mean_ad = np.mean(distance, axis=1) * _MEAN_AD_SCALE
        spread = np.where(mad > 0, mad, mean_ad)
    deviation = current - center
    scale = np.maximum(np.abs(center), 1.0) * _TINY
    flat = spread <= scale
    with np.errstate(divide="ignore", invalid="ignore"):
        score = np.where(flat, 0.0, deviation / np.where(flat, 1.0, spread))
    moved = flat & (np.abs(deviation) > scale)
    score = np.where(
        moved, np.copysign(SCORE_CAP, deviation), np.clip(score, -SCORE_CAP, SCORE_CAP)
    )
    result: NDArray[np.float64] = np.nan_to_num(score, nan=0.0)
    return result
