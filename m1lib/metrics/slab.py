"""What raw chunks and rollup blocks share: a time-sorted run of points over a span of time.

Queries, retention and ingest cut both the same way (by time, with ``bounds`` and ``slice``), so
they are written once against :class:`TimeSlab`, whichever kind of slab they are given.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol, Self, TypeVar

__all__ = ["TimeSlab", "overlapping"]


class TimeSlab(Protocol):
    """Points (events, or rollup rows) sorted by time; immutable once built.

    ``start_us`` is the time of the first point and ``end_us`` the end of the time the slab covers
    (exclusive): one microsecond past the last event, or the end of the last rollup bucket.
    """

    @property
    def size(self) -> int: ...

    @property
    def start_us(self) -> int: ...

    @property
    def end_us(self) -> int: ...

    def bounds(self, start_us: int, end_us: int) -> tuple[int, int]:
        """Index range of the points whose time is in ``[start_us, end_us)``."""
        ...

    def slice(self, lo: int, hi: int, *, copy: bool = False) -> Self:
        """Points ``lo:hi``: views, or copies so that the rest can be freed."""
        ...


S = TypeVar("S", bound=TimeSlab)


def overlapping(slabs: Iterable[S], start_us: int, end_us: int) -> Iterator[S]:
    """The slabs that may hold points in ``[start_us, end_us)`` (bucket-aligned for rollups)."""
    for slab in slabs:
        if slab.end_us > start_us and slab.start_us < end_us:
            yield slab
