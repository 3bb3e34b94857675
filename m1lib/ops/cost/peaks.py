"""Peak hours of spend, found in the 24-bin hour-of-day profile by a robust outlier rule.

The rule (a modified z-score, Iglewicz and Hoaglin): with m the median of the 24 hourly spends and
MAD the median of their absolute deviations from m, hour h is a peak when

    spend[h] > m + k * max(1.4826 * MAD, m / 20)        (k = 3 by default)

1.4826 * MAD estimates the standard deviation of normal data, and neither the median nor the MAD
moves when up to 11 hours stand out, so one peak does not hide another. The floor m / 20 keeps a
profile whose hours are nearly all equal (MAD 0) from calling a hair above the median a peak: a
flat profile has no peak. An all-zero profile has none either. Arithmetic is exact (``Fraction``
of micro-dollars), so the hand-computed cases in the tests hold to the last digit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from statistics import median
from typing import Any, Final

from m1lib.errors import InputError

__all__ = ["MAD_SCALE", "PEAK_K", "RULE", "PeakHours", "find_peaks"]

PEAK_K: Final = 3.0
MAD_SCALE: Final = Fraction("1.4826")
MIN_SPREAD: Final = Fraction(1, 20)  # of the median
RULE: Final = "spend > median + k x max(1.4826 x MAD, median / 20)"


@dataclass(frozen=True, slots=True)
class PeakHours:
    """The peak hours (UTC, 0-23) of a profile, and the figures the rule used."""

    hours: tuple[int, ...]
    median_micros: Fraction
    mad_micros: Fraction
    threshold_micros: Fraction
    k: float
    excess_micros: int  # sum over the peaks of their spend above the median

    @property
    def rule(self) -> str:
        return f"{RULE}, k = {self.k:g}"

    def to_json(self) -> dict[str, Any]:
        return {
            "hours": list(self.hours),
            "rule": self.rule,
            "medianUsd": round(float(self.median_micros) / 1e6, 6),
            "madUsd": round(float(self.mad_micros) / 1e6, 6),
            "thresholdUsd": round(float(self.threshold_micros) / 1e6, 6),
            "excessUsd": round(self.excess_micros / 1e6, 6),
        }


def find_peaks(profile: Sequence[int], *, k: float = PEAK_K) -> PeakHours:
    """The hours of ``profile`` (24 spends in micro-dollars, index = UTC hour) above the rule's
    threshold (module docstring), in hour order."""
    if len(profile) != 24:
        raise InputError("profile", f"has {len(profile)} bins", ["24 (one per UTC hour)"])
    if not k > 0:
        raise InputError("k", f"{k} is not positive", ["a number above 0"])
    values = [Fraction(v) for v in profile]
    center = Fraction(median(values))
    mad = Fraction(median(abs(v - center) for v in values))
    threshold = center + Fraction(str(k)) * max(MAD_SCALE * mad, MIN_SPREAD * center)
    hours = tuple(h for h, v in enumerate(values) if v > threshold and v > 0)
    excess = sum(values[h] - center for h in hours)
    return PeakHours(hours, center, mad, threshold, k, round(excess))
