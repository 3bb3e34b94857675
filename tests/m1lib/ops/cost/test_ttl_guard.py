from __future__ import annotations

import pytest

from m1lib.errors import InputError
from m1lib.ops.cost.policy import Figures
from m1lib.ops.cost.ttl_guard import Tolerance, judge

BEFORE = Figures(hit_rate=0.80, error_rate=0.01, stale_rate=0.02, spend_usd=10.0)


@pytest.mark.parametrize(
    ("after", "reason"),
    [
        (Figures(hit_rate=0.70, error_rate=0.01, stale_rate=0.02), "hit rate fell"),
        (Figures(hit_rate=0.80, error_rate=0.05, stale_rate=0.02), "error rate rose"),
        (Figures(hit_rate=0.90, error_rate=0.01, stale_rate=0.20), "stale rate rose"),
    ],
)
def test_judge_reverts_when_a_figure_gets_worse(after: Figures, reason: str) -> None:
    verdict = judge(BEFORE, after, Tolerance())
    assert verdict.revert
    assert reason in verdict.reason


def test_judge_keeps_a_change_within_the_tolerance() -> None:
    after = Figures(hit_rate=0.78, error_rate=0.02, stale_rate=0.05, spend_usd=5.0)
    assert not judge(BEFORE, after, Tolerance()).revert
    assert judge(BEFORE, after, Tolerance(hit_rate_drop=0.01)).revert


def test_judge_keeps_a_change_it_cannot_compare() -> None:
    assert not judge(None, BEFORE, Tolerance()).revert
    assert not judge(BEFORE, Figures(), Tolerance()).revert


def test_tolerance_is_a_fraction() -> None:
    with pytest.raises(InputError) as caught:
        Tolerance(error_rate_rise=2.0)
    assert caught.value.path == "error_rate_rise"
