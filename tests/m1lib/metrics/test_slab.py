"""Raw chunks and rollup blocks as one TimeSlab: the same span, cuts and overlap test for both."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from m1lib.metrics.columns import RawChunk
from m1lib.metrics.rollup import RollupBlock, rollup_raw
from m1lib.metrics.schema import METRICS
from m1lib.metrics.slab import TimeSlab, overlapping
from m1lib.metrics.store import EventStore
from tests.m1lib.metrics.factories import HOUR_US, MINUTE_US, NOW_S, make_events

METRIC = "health_checks"


def chunk_of(times: list[int]) -> RawChunk:
    """A sorted chunk of health_checks events at ``times`` (other fields arbitrary)."""
    store = EventStore(clock=lambda: NOW_S)
    frame = make_events(METRIC, len(times))
    columns = {name: frame[name].tolist() for name in METRICS[METRIC].field_names()}
    return store.encode(METRIC, times, columns)


def slabs_of(times: list[int]) -> list[RawChunk | RollupBlock]:
    chunk = chunk_of(times)
    spec = METRICS[METRIC]
    return [chunk, rollup_raw(chunk, spec, MINUTE_US), rollup_raw(chunk, spec, HOUR_US)]


def point_times(slab: RawChunk | RollupBlock) -> np.ndarray:
    return slab.ts if isinstance(slab, RawChunk) else slab.bucket


def span(slab: TimeSlab) -> tuple[int, int]:
    return slab.start_us, slab.end_us


def test_the_span_is_the_first_point_to_the_end_of_the_last() -> None:
    t0 = 10 * HOUR_US + 5 * MINUTE_US + 7
    chunk, minutes, hours = slabs_of([t0, t0 + 3, t0 + MINUTE_US + 1])
    assert span(chunk) == (t0, t0 + MINUTE_US + 2)  # one microsecond past the last event
    assert span(minutes) == (t0 - 7, t0 - 7 + 2 * MINUTE_US)  # whole buckets
    assert span(hours) == (10 * HOUR_US, 11 * HOUR_US)


@settings(deadline=None, max_examples=60)
@given(
    times=st.lists(st.integers(0, 6 * HOUR_US), min_size=1, max_size=40, unique=True),
    lo=st.integers(-HOUR_US, 7 * HOUR_US),
    length=st.integers(0, 3 * HOUR_US),
)
def test_overlapping_keeps_every_slab_with_points_in_the_range(
    times: list[int], lo: int, length: int
) -> None:
    hi = lo + length
    for slab in slabs_of(sorted(times)):
        kept = list(overlapping([slab], lo, hi)) == [slab]
        start, end = slab.bounds(lo, hi)
        in_range = point_times(slab)
        assert end - start == int(((in_range >= lo) & (in_range < hi)).sum())
        if end > start:
            assert kept  # never drops a slab the range reads
        if slab.end_us <= lo or slab.start_us >= hi:
            assert not kept


@pytest.mark.parametrize("copy", [False, True])
def test_slices_of_both_kinds_are_views_or_copies_alike(copy: bool) -> None:
    times = sorted({k * 7 * MINUTE_US + k for k in range(40)})
    for slab in slabs_of(times):
        lo, hi = 2, slab.size - 3
        part = slab.slice(lo, hi, copy=copy)
        assert part.size == hi - lo
        assert part.start_us == int(point_times(slab)[lo])
        assert np.shares_memory(point_times(part), point_times(slab)) is not copy
        if isinstance(slab, RollupBlock):
            assert isinstance(part, RollupBlock)
            assert np.array_equal(part.count, slab.count[lo:hi])
            for name, m in slab.measures.items():
                cut = part.measures[name]
                e0, e1 = int(m.offsets[lo]), int(m.offsets[hi])
                assert np.array_equal(cut.codes, m.codes[e0:e1])
                assert int(cut.offsets[0]) == 0
                assert int(cut.offsets[-1]) == e1 - e0
                assert np.shares_memory(cut.sum, m.sum) is not copy
