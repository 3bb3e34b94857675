"""The one integer time scale: exact, and defined wherever a datetime is."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from m1lib.epoch import EPOCH, from_us, to_us


def test_the_epoch_is_zero_and_one_microsecond_is_one() -> None:
    assert to_us(EPOCH) == 0
    assert to_us(EPOCH + timedelta(microseconds=1)) == 1
    assert to_us(EPOCH - timedelta(microseconds=1)) == -1


def test_exact_to_the_microsecond_at_todays_dates() -> None:
    moment = datetime(2026, 12, 3, 7, 25, 42, 123457, tzinfo=UTC)
    assert to_us(moment) == 1_796_282_742_123_457
    assert from_us(to_us(moment)) == moment


@pytest.mark.parametrize(
    "moment",
    [
        datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=14))),  # astimezone(UTC) overflows here
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone(timedelta(hours=-14))),
    ],
)
def test_defined_at_the_ends_of_the_calendar_whatever_the_offset(moment: datetime) -> None:
    offset = moment.utcoffset()
    assert offset is not None
    wall = moment.replace(tzinfo=None) - datetime(1970, 1, 1)
    assert to_us(moment) == (wall - offset) // timedelta(microseconds=1)


def test_an_offset_is_the_same_instant_as_utc() -> None:
    local = datetime(2026, 1, 1, 5, 30, tzinfo=timezone(timedelta(hours=5, minutes=30)))
    assert to_us(local) == to_us(datetime(2026, 1, 1, tzinfo=UTC))
    assert from_us(to_us(local)).tzinfo is UTC


def test_a_naive_datetime_is_refused() -> None:
    with pytest.raises(TypeError):
        to_us(datetime(2026, 1, 1))


@settings(deadline=None)
@given(
    st.datetimes(
        min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)
    )
)
def test_round_trip(moment: datetime) -> None:
    assert from_us(to_us(moment)) == moment
