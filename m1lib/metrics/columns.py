"""Columnar event storage: string dictionaries and immutable, time-sorted raw chunks.

Raw events are numpy arrays, one per field, never Python objects: strings are dictionary codes
(int32, -1 for null), booleans int8 (1, 0, -1 for null), integers int64, floats float64, the
timestamp int64 microseconds, and each measure also keeps its 16-bit sketch code. A
``policy_decisions`` event costs 39 bytes this way. Chunks never change once built, so a query can
read them while the ingest thread builds new ones.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from m1lib.errors import UsageError
from m1lib.metrics.schema import Kind

__all__ = ["DTYPES", "RawChunk", "StringDictionary"]

DTYPES: Mapping[Kind, type[np.generic]] = {
    Kind.STR: np.int32,
    Kind.BOOL: np.int8,
    Kind.INT: np.int64,
    Kind.FLOAT: np.float64,
}


class StringDictionary:
    """The values of one string field, each with a code that never changes (null is -1).

    Only the store's writer (under its lock) adds values; readers only index ``values`` below a
    length they saw, so they need no lock.
    """

    def __init__(self, values: Iterable[str] = ()) -> None:
        self.values: list[str] = []
        self._index: dict[str | None, int] = {None: -1}
        for value in values:
            self._add(value)

    def __len__(self) -> int:
        return len(self.values)

    def _add(self, value: str) -> int:
        code = self._index.get(value)
        if code is None:
            code = len(self.values)
            self.values.append(value)
            self._index[value] = code
        return code

    def code(self, value: str | None) -> int | None:
        """The code of ``value``, or None when it never occurred."""
        return self._index.get(value)

    def encode(self, column: Sequence[str | None]) -> NDArray[np.int32]:
        """Codes of a column of values, adding the new ones (writer only)."""
        index = self._index
        try:
            return np.fromiter(map(index.__getitem__, column), np.int32, len(column))
        except KeyError:
            pass  # new values: add them, then encode again
        for value in set(column):
            if value not in index:
                if not isinstance(value, str):
                    raise UsageError(f"a string column holds {value!r}; allowed: str or None")
                self._add(value)
        return np.fromiter(map(index.__getitem__, column), np.int32, len(column))

    def remap(self, values: Sequence[str]) -> NDArray[np.int32]:
        """Translation from another dictionary's codes to ours; index ``-1`` (null) stays -1."""
        table = np.empty(len(values) + 1, dtype=np.int32)
        table[: len(values)] = self.encode(values)
        table[len(values)] = -1
        return table

    def lookup(self, predicate: Callable[[str], bool], null: bool, size: int) -> NDArray[np.bool_]:
        """``predicate`` over the first ``size`` values, plus ``null``'s answer at index -1."""
        table = np.empty(size + 1, dtype=np.bool_)
        table[:size] = [predicate(value) for value in self.values[:size]]
        table[size] = null
        return table

    def decode(self, codes: NDArray[np.integer], size: int) -> NDArray[np.object_]:
        """Values (None for null) of codes below ``size``."""
        table = np.empty(size + 1, dtype=object)
        table[:size] = self.values[:size]
        table[size] = None
        return table[codes]  # type: ignore[no-any-return]

    def ranks(self, size: int) -> NDArray[np.int64]:
        """Sort position of each code's value (null last, at index -1)."""
        order = sorted(range(size), key=self.values.__getitem__)
        table = np.empty(size + 1, dtype=np.int64)
        table[order] = np.arange(size)
        table[size] = size
        return table


@dataclass(frozen=True)
class RawChunk:
    """Events of one metric sorted by time: one array per field, plus measure sketch codes.

    A :class:`~m1lib.metrics.slab.TimeSlab` of events.

    ``dictionaries`` are the ones its string codes refer to (a store may rebuild its dictionaries
    later; a chunk waiting to be persisted or published keeps the ones it was encoded with).
    """

    ts: NDArray[np.int64]
    columns: Mapping[str, NDArray[Any]]
    codes: Mapping[str, NDArray[np.uint16]]
    dictionaries: Mapping[str, StringDictionary] = field(default_factory=dict, compare=False)

    @property
    def size(self) -> int:
        return int(self.ts.size)

    @property
    def start_us(self) -> int:
        return int(self.ts[0])

    @property
    def end_us(self) -> int:
        """One microsecond past the last event."""
        return int(self.ts[-1]) + 1

    @property
    def nbytes(self) -> int:
        arrays = [self.ts, *self.columns.values(), *self.codes.values()]
        return sum(int(array.nbytes) for array in arrays)

    def bounds(self, start_us: int, end_us: int) -> tuple[int, int]:
        """Index range of events with ``start_us <= ts < end_us``."""
        lo, hi = np.searchsorted(self.ts, (start_us, end_us), side="left")
        return int(lo), int(hi)

    def slice(self, lo: int, hi: int, *, copy: bool = False) -> RawChunk:
        def cut(array: NDArray[Any]) -> NDArray[Any]:
            part = array[lo:hi]
            return part.copy() if copy else part

        return RawChunk(
            cut(self.ts),
            {name: cut(array) for name, array in self.columns.items()},
            {name: cut(array) for name, array in self.codes.items()},
            self.dictionaries,
        )

    def take(self, index: NDArray[np.intp]) -> RawChunk:
        return RawChunk(
            self.ts[index],
            {name: array[index] for name, array in self.columns.items()},
            {name: array[index] for name, array in self.codes.items()},
            self.dictionaries,
        )

    def sorted(self) -> RawChunk:
        """This chunk in time order (itself when already sorted)."""
        if self.size < 2 or bool(np.all(self.ts[1:] >= self.ts[:-1])):
            return self
        return self.take(np.argsort(self.ts, kind="stable"))

    @staticmethod
    def concat(chunks: Sequence[RawChunk]) -> RawChunk:
        """One sorted chunk of several (a stable merge: equal times keep arrival order).

        The chunks must share their dictionaries (those of one store at one time)."""
        if len(chunks) == 1:
            return chunks[0]
        first = chunks[0]
        merged = RawChunk(
            np.concatenate([c.ts for c in chunks]),
            {name: np.concatenate([c.columns[name] for c in chunks]) for name in first.columns},
            {name: np.concatenate([c.codes[name] for c in chunks]) for name in first.codes},
            first.dictionaries,
        )
        return merged.sorted()
