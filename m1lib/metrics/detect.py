"""Detection over bucket series: a significant trend, and anomalies against a moving window.

Both are plain functions of a sequence of numbers (None for a bucket without a value), so they work
on any query output and are easy to check by hand. Neither ever returns NaN or infinity: a flat
series has no trend and no anomaly, a series too short for the test says so, and a point that
leaves a perfectly flat window gets the capped score :data:`SCORE_CAP`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

__all__ = ["SCORE_CAP", "Outlier", "TrendFit", "anomalies", "student_t_two_sided", "trend"]

SCORE_CAP: Final = 1000.0
_MAD_SCALE = 0.6744897501960817  # Phi^-1(0.75): MAD of a normal sample is 0.6745 sigma
_MEAN_AD_SCALE = 1.2533141373155003  # sqrt(pi/2): mean absolute deviation to sigma
_TINY = 1e-12


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


def trend(values: Sequence[float | None], *, significance: float = 0.05) -> TrendFit:
    """Least-squares slope over the bucket index, tested against zero with a t-test.

    Missing buckets (None) are left out; under 3 points there is no test and the direction is flat.
    """
    points = [(i, float(v)) for i, v in enumerate(values) if v is not None and math.isfinite(v)]
    n = len(points)
    if n < 2:
        return TrendFit("flat", 0.0, 0.0 if n else None, None, None, n)
    x = np.array([p[0] for p in points], dtype=np.float64)
    raw = np.array([p[1] for p in points], dtype=np.float64)
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
    values: Sequence[float | None],
    *,
    method: Literal["zscore", "mad"] = "zscore",
    window: int = 10,
    threshold: float = 2.0,
) -> list[Outlier]:
    """Points whose score against the ``window`` points before them reaches ``threshold``.

    ``zscore``: (x - mean) / sample standard deviation of the window. ``mad``: 0.6745 (x - median)
    / MAD, robust to earlier outliers in the window (the mean absolute deviation stands in when the
    MAD is 0). Missing points are skipped and windows are made of the points present.
    """
    present = [(i, float(v)) for i, v in enumerate(values) if v is not None and math.isfinite(v)]
    if len(present) <= window:
        return []
    y = np.array([v for _, v in present], dtype=np.float64)
    y /= float(np.abs(y).max()) or 1.0  # scores are scale-free; this keeps huge values finite
    windows = sliding_window_view(y[:-1], window)  # window k ends just before point k + window
    current = y[window:]
    if method == "zscore":
        center = windows.mean(axis=1)
        spread = windows.std(axis=1, ddof=1)
    else:
        center = np.median(windows, axis=1)
        mad = np.median(np.abs(windows - center[:, None]), axis=1) / _MAD_SCALE
        mean_ad = np.mean(np.abs(windows - center[:, None]), axis=1) * _MEAN_AD_SCALE
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
    out = []
    score = np.nan_to_num(score, nan=0.0)
    for k in np.flatnonzero(np.abs(score) >= threshold):
        index, value = present[int(k) + window]
        out.append(Outlier(index, value, round(float(score[k]), 6)))
    return out
