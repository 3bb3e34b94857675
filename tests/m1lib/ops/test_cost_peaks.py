"""Peak hours by the robust rule: spend > median + k x max(1.4826 x MAD, median / 20)."""

from __future__ import annotations

from fractions import Fraction

import pytest

from m1lib.errors import InputError
from m1lib.ops.cost.peaks import find_peaks


def test_a_flat_profile_has_no_peak() -> None:
    peaks = find_peaks([1_000] * 24)
    assert peaks.hours == ()
    assert (peaks.median_micros, peaks.mad_micros, peaks.threshold_micros) == (1000, 0, 1150)


def test_a_profile_flat_within_a_few_percent_has_no_peak() -> None:
    profile = [1_000 + (37 * h) % 90 - 45 for h in range(24)]  # 955..1044
    assert find_peaks(profile).hours == ()


def test_an_all_zero_profile_has_no_peak() -> None:
    assert find_peaks([0] * 24).hours == ()


def test_one_peak_just_above_the_threshold_is_found_and_one_at_it_is_not() -> None:
    # median 100, MAD 0: threshold 100 + 3 x max(0, 100 / 20) = 115
    above = [100] * 24
    above[9] = 116
    peaks = find_peaks(above)
    assert (peaks.hours, peaks.threshold_micros, peaks.excess_micros) == ((9,), 115, 16)
    at = [100] * 24
    at[9] = 115
    assert find_peaks(at).hours == ()


def test_two_peaks_are_both_found_one_does_not_hide_the_other() -> None:
    profile = [100] * 24
    profile[9], profile[14] = 300, 200
    peaks = find_peaks(profile)
    assert peaks.hours == (9, 14)
    assert peaks.excess_micros == 200 + 100


def test_the_mad_sets_the_threshold_on_a_spread_profile() -> None:
    # 12 hours at 90 and 12 at 110: median 100, MAD 10, threshold 100 + 3 x 14.826 = 144.478
    base = [90, 110] * 12
    peaks = find_peaks(base)
    assert (peaks.median_micros, peaks.mad_micros) == (100, 10)
    assert peaks.threshold_micros == Fraction("144.478")
    higher = list(base)
    higher[1] = 145  # median and MAD stay 100 and 10
    assert find_peaks(higher).hours == (1,)
    higher[1] = 144
    assert find_peaks(higher).hours == ()


def test_business_hours_stand_out_when_most_hours_are_idle() -> None:
    profile = [0] * 24
    for hour in range(9, 17):
        profile[hour] = 500
    assert find_peaks(profile).hours == tuple(range(9, 17))


def test_k_moves_the_threshold() -> None:
    profile = [100] * 24
    profile[3] = 111
    assert find_peaks(profile, k=3).hours == ()
    assert find_peaks(profile, k=2).hours == (3,)  # threshold 110


@pytest.mark.parametrize(("profile", "k", "path"), [([1] * 23, 3.0, "profile"), ([1] * 24, 0, "k")])
def test_a_profile_of_other_than_24_bins_or_a_k_not_above_0_is_refused(
    profile: list[int], k: float, path: str
) -> None:
    with pytest.raises(InputError) as caught:
        find_peaks(profile, k=k)
    assert caught.value.path == path
