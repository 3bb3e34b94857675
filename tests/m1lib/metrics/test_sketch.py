"""The quantile sketch: within its stated relative error of the exact (interpolated) percentile."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from m1lib.metrics import sketch
from m1lib.metrics.sketch import RELATIVE_ERROR, codes_of, group_quantiles, representatives


def _quantiles(
    values: np.ndarray, groups: np.ndarray, n_groups: int, qs: list[float]
) -> list[np.ndarray]:
    low = np.full(n_groups, np.nan)
    high = np.full(n_groups, np.nan)
    for g in range(n_groups):
        part = values[groups == g]
        if part.size:
            low[g], high[g] = part.min(), part.max()
    return group_quantiles(groups, codes_of(values), None, n_groups, qs, low, high)


def test_codes_are_monotone_and_representatives_within_the_bound() -> None:
    values = np.concatenate(
        [-np.geomspace(1e-6, 1e9, 500)[::-1], [0.0], np.geomspace(1e-6, 1e9, 500)]
    )
    codes = codes_of(values)
    assert np.all(np.diff(codes.astype(np.int64)) >= 0)
    estimates = representatives(codes)
    nonzero = values != 0
    assert np.all(
        np.abs(estimates[nonzero] - values[nonzero]) <= RELATIVE_ERROR * np.abs(values[nonzero])
    )
    assert estimates[~nonzero].tolist() == [0.0]


@pytest.mark.parametrize("dense", [True, False])
def test_percentiles_of_many_groups_are_within_one_percent(
    monkeypatch: pytest.MonkeyPatch, dense: bool
) -> None:
    if not dense:
        monkeypatch.setattr(sketch, "_DENSE_CELLS", 1)  # force the sorted (sparse) path
    rng = np.random.default_rng(7)
    values = rng.lognormal(0.0, 2.0, 30_000)
    groups = rng.integers(0, 40, values.size).astype(np.int64)
    qs = [0.0, 0.01, 0.5, 0.9, 0.99, 0.999, 1.0]
    got = _quantiles(values, groups, 42, qs)
    for q, estimate in zip(qs, got, strict=True):
        for g in range(42):
            part = values[groups == g]
            if part.size == 0:
                assert np.isnan(estimate[g])
                continue
            exact = np.quantile(part, q)
            assert abs(estimate[g] - exact) <= RELATIVE_ERROR * exact


def test_min_and_max_are_exact() -> None:
    values = np.array([3.3, 1.1, 2.2])
    low, high = _quantiles(values, np.zeros(3, dtype=np.int64), 1, [0.0, 1.0])
    assert (low[0], high[0]) == (1.1, 3.3)


def test_weighted_entries_merge_like_repeated_values() -> None:
    values = np.array([1.0, 10.0, 100.0])
    weights = np.array([5, 1, 94], dtype=np.int64)
    groups = np.zeros(3, dtype=np.int64)
    (p50,) = group_quantiles(
        groups, codes_of(values), weights, 1, [0.5], np.array([1.0]), np.array([100.0])
    )
    assert abs(p50[0] - 100.0) <= RELATIVE_ERROR * 100.0


@settings(deadline=None, max_examples=60)
@given(
    st.lists(
        st.one_of(st.just(0.0), st.floats(min_value=1e-12, max_value=1e12),
                  st.floats(min_value=-1e12, max_value=-1e-12)),
        min_size=1, max_size=200,
    ),
    st.floats(min_value=0.0, max_value=1.0),
)  # fmt: skip
def test_any_sample_in_the_covered_range_stays_between_the_bracketing_order_statistics(
    values: list[float], q: float
) -> None:
    data = np.array(values)
    (estimate,) = _quantiles(data, np.zeros(data.size, dtype=np.int64), 1, [q])
    ordered = np.sort(data)
    rank = q * (data.size - 1)
    below, above = ordered[int(np.floor(rank))], ordered[int(np.ceil(rank))]
    slack = RELATIVE_ERROR * max(abs(below), abs(above)) + 1e-300
    assert below - slack <= estimate[0] <= above + slack
    if (data > 0).all() or (data < 0).all():  # one sign: the bound holds against the exact value
        exact = np.quantile(data, q)
        assert abs(estimate[0] - exact) <= RELATIVE_ERROR * abs(exact) * (1 + 1e-12)
