"""Trend and anomaly detection on constructed series: step, ramp, spike, flat, zero, too short."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from m1lib.metrics.detect import SCORE_CAP, anomalies, student_t_two_sided, trend


@pytest.mark.parametrize(
    ("t", "df", "p"),
    [(2.228, 10, 0.05), (1.96, 100000, 0.05), (0.0, 5, 1.0), (12.706, 1, 0.05), (-3.169, 10, 0.01)],
)
def test_student_t_p_values_match_the_tables(t: float, df: int, p: float) -> None:
    assert student_t_two_sided(t, df) == pytest.approx(p, abs=5e-4)


def test_ramp_goes_up_with_its_percent_change() -> None:
    fit = trend([10.0 + 2 * i + (0.5 if i % 2 else -0.5) for i in range(20)])
    assert fit.direction == "up"
    assert fit.slope == pytest.approx(2.0, rel=0.05)
    assert fit.p_value is not None
    assert fit.p_value < 1e-6
    assert fit.change_pct == pytest.approx((48.0 - 10.0) / 10.0 * 100, rel=0.05)


def test_falling_line_goes_down_and_a_perfect_line_has_p_zero() -> None:
    fit = trend([100.0 - 3 * i for i in range(10)])
    assert fit.direction == "down"
    assert fit.p_value == 0.0
    assert fit.r_squared == pytest.approx(1.0)


def test_noise_without_slope_is_flat() -> None:
    rng = np.random.default_rng(3)
    fit = trend(list(100 + rng.normal(0, 5, 50)))
    assert fit.direction == "flat"
    assert fit.p_value is not None
    assert fit.p_value > 0.05


@pytest.mark.parametrize("value", [0.0, 42.0])
def test_flat_and_zero_series_are_flat_with_no_change(value: float) -> None:
    fit = trend([value] * 12)
    assert (fit.direction, fit.slope, fit.change_pct, fit.p_value) == ("flat", 0.0, 0.0, 1.0)


def test_change_from_zero_is_unknown_not_infinite() -> None:
    fit = trend([0.0, 0.0, 0.0, 5.0, 10.0, 15.0, 20.0])
    assert fit.direction == "up"
    assert fit.change_pct is not None
    assert math.isfinite(fit.change_pct)
    fit = trend([-3.0, -1.0, 1.0, 3.0])  # fitted first point is -3: a change relative to it
    assert fit.change_pct == pytest.approx(200.0)


@pytest.mark.parametrize("values", [[], [1.0], [1.0, 5.0], [None, 3.0, None]])
def test_too_short_series_have_no_test(values: list[float | None]) -> None:
    fit = trend(values)
    assert fit.direction == "flat"
    assert fit.p_value is None
    assert anomalies(values) == []


def test_missing_buckets_are_left_out() -> None:
    fit = trend([1.0, None, 3.0, None, 5.0, 6.0, None, 8.0])
    assert fit.points == 5
    assert fit.slope == pytest.approx(1.0)


@pytest.mark.parametrize("method", ["zscore", "mad"])
def test_a_spike_is_the_only_anomaly(method: str) -> None:
    series = [50 + 0.5 * math.sin(i) for i in range(40)]
    series[30] = 80.0
    found = anomalies(series, method=method, threshold=3.0)  # type: ignore[arg-type]
    assert [a.index for a in found] == [30]
    assert found[0].value == 80.0
    assert found[0].score > 10


@pytest.mark.parametrize("method", ["zscore", "mad"])
def test_a_step_is_flagged_where_it_happens(method: str) -> None:
    series = [10.0 + (0.1 if i % 2 else -0.1) for i in range(20)] + [30.0] * 10
    found = anomalies(series, method=method, window=10, threshold=3.0)  # type: ignore[arg-type]
    assert found[0].index == 20
    assert found[0].score > 3


@pytest.mark.parametrize("method", ["zscore", "mad"])
def test_flat_series_have_no_anomalies_and_a_jump_off_flat_is_capped(method: str) -> None:
    assert anomalies([7.0] * 30, method=method) == []  # type: ignore[arg-type]
    found = anomalies([0.0] * 15 + [1.0], method=method)  # type: ignore[arg-type]
    assert [(a.index, a.score) for a in found] == [(15, SCORE_CAP)]
    found = anomalies([5.0] * 15 + [-1.0], method=method)  # type: ignore[arg-type]
    assert found[0].score == -SCORE_CAP


def test_mad_ignores_an_earlier_outlier_in_its_window() -> None:
    series = [10.0, 10.5, 9.5, 10.0, 100.0, 10.2, 9.8, 10.1, 9.9, 10.0, 13.0]
    assert [a.index for a in anomalies(series, method="mad", window=10, threshold=3.0)] == [10]
    assert anomalies(series, method="zscore", window=10, threshold=3.0) == []


def test_outputs_are_always_json_numbers() -> None:
    for series in ([0.0] * 20, [1e308, -1e308] * 10, [0.0] * 10 + [1e-300] * 10):
        fit = trend(series)
        json.dumps([fit.slope, fit.change_pct, fit.p_value, fit.r_squared], allow_nan=False)
        json.dumps([a.score for a in anomalies(series)], allow_nan=False)
