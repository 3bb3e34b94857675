"""Which rows a query reads and the group of each: parts, group keys and dense group ids.

Each segment of the plan yields *parts*: raw events or rollup rows in its time range that pass the
filters, each with the integer key of its group (bucket index and group field codes in mixed
radix). Keys then become dense group ids, so every reduction is a ``bincount`` over them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from m1lib.errors import InputError
from m1lib.metrics.budget import Limits, QueryBudget
from m1lib.metrics.columns import RawChunk
from m1lib.metrics.filters import evaluate
from m1lib.metrics.plan import RAW, Choice, Resolved
from m1lib.metrics.rollup import RollupBlock
from m1lib.metrics.schema import FieldSpec, Kind
from m1lib.metrics.slab import overlapping
from m1lib.metrics.store import MetricSnapshot

__all__ = ["KeySpace", "RawPart", "RollupPart", "assign_groups", "decode", "keep_groups", "read"]

_DENSE_GROUPS: Final = 1 << 22  # key spaces up to this size index arrays directly
_KEY_LIMIT: Final = 1 << 62


@dataclass
class RawPart:
    """The events of one chunk in a segment's range that pass the filters, one event a row."""

    chunk: RawChunk
    index: NDArray[np.intp] | None  # selected rows of chunk; None: all
    key: NDArray[np.int64] = field(init=False)
    gid: NDArray[np.int64] = field(init=False)
    _cache: dict[str, NDArray[Any]] = field(default_factory=dict)

    def column(self, name: str) -> NDArray[Any]:
        if name not in self._cache:
            data = self.chunk.columns[name]
            self._cache[name] = data if self.index is None else data[self.index]
        return self._cache[name]

    def codes(self, name: str) -> NDArray[np.uint16]:
        key = f"#codes/{name}"
        if key not in self._cache:
            data = self.chunk.codes[name]
            self._cache[key] = data if self.index is None else data[self.index]
        return self._cache[key]

    @property
    def ts(self) -> NDArray[np.int64]:
        return self.chunk.ts if self.index is None else self.chunk.ts[self.index]

    @property
    def weights(self) -> None:
        """Events per row: one each."""
        return None


@dataclass
class RollupPart:
    """Rows ``lo:hi`` of one rollup block that pass the filters, each row weighing its events."""

    block: RollupBlock
    lo: int
    hi: int
    index: NDArray[np.intp]  # selected rows, relative to lo
    key_all: NDArray[np.int64]  # per row lo:hi, -1 where filtered out
    gid: NDArray[np.int64] = field(init=False)
    gid_all: NDArray[np.int64] = field(init=False)

    @cached_property
    def count(self) -> NDArray[np.int64]:
        return self.block.count[self.lo : self.hi][self.index]

    @property
    def weights(self) -> NDArray[np.int64]:
        """Events per row."""
        return self.count

    def column(self, name: str) -> NDArray[Any]:
        """A dimension's codes per selected row."""
        return self.block.dims[name][self.lo : self.hi][self.index]

    def stat(self, measure: str, part: str) -> NDArray[np.float64]:
        data: NDArray[np.float64] = getattr(self.block.measures[measure], part)
        return data[self.lo : self.hi][self.index]

    def entries(
        self, measure: str
    ) -> tuple[NDArray[np.int64], NDArray[np.uint16], NDArray[np.int64]]:
        """(group, code, count) of the sketch entries of the selected rows."""
        m = self.block.measures[measure]
        e0, e1 = int(m.offsets[self.lo]), int(m.offsets[self.hi])
        per_row = np.diff(m.offsets[self.lo : self.hi + 1])
        group = np.repeat(self.gid_all, per_row)
        keep = group >= 0
        return group[keep], m.codes[e0:e1][keep], m.counts[e0:e1][keep]


class KeySpace:
    """The mixed-radix key of a group: bucket index, then each group field's code + 1."""

    def __init__(self, r: Resolved, snap: MetricSnapshot, start: int, end: int) -> None:
        self.interval = r.interval_us
        self.first_bucket = 0 if self.interval is None else start // self.interval
        self.buckets = (
            1
            if self.interval is None
            else max(1, (end - 1) // self.interval - self.first_bucket + 1)
        )
        self.fields = r.group_fields
        self.cards = [snap.sizes[f.name] + 1 if f.kind is Kind.STR else 3 for f in self.fields]
        size = self.buckets
        for card in self.cards:
            size *= card
        if size >= _KEY_LIMIT:
            raise InputError(
                "/groupBy",
                "these fields have too many combinations of values",
                ["fewer groupBy fields", "a coarser interval"],
            )
        self.size = size

    def keys(
        self, times: NDArray[np.int64], column: Callable[[str], NDArray[Any]]
    ) -> NDArray[np.int64]:
        if self.interval is None:
            key = np.zeros(times.size, dtype=np.int64)
        else:
            key = times // self.interval
            key -= self.first_bucket
        for f, card in zip(self.fields, self.cards, strict=True):
            key *= card
            key += column(f.name)
            key += 1
        return key

    def decode(self, keys: NDArray[np.int64]) -> tuple[NDArray[np.int64], list[NDArray[np.int64]]]:
        """Bucket start (us) and each group field's code per key."""
        rest = keys.copy()
        codes: list[NDArray[np.int64]] = []
        for card in reversed(self.cards):
            codes.append(rest % card - 1)
            rest //= card
        codes.reverse()
        starts = (rest + self.first_bucket) * (self.interval or 0)
        return starts, codes


def read(
    r: Resolved, snap: MetricSnapshot, space: KeySpace, choice: Choice, budget: QueryBudget
) -> tuple[list[RawPart], list[RollupPart], int]:
    """The parts of every segment of ``choice``, keyed; and the events and rows scanned."""
    raw_parts: list[RawPart] = []
    rollup_parts: list[RollupPart] = []
    scanned = 0
    for segment in choice.segments:
        slabs: Sequence[RawChunk | RollupBlock] = (
            snap.raw if segment.resolution == RAW else snap.rollups[segment.resolution]
        )
        for slab in overlapping(slabs, segment.start_us, segment.end_us):
            budget.check()
            lo, hi = slab.bounds(segment.start_us, segment.end_us)
            if lo == hi:
                continue
            scanned += hi - lo
            if isinstance(slab, RawChunk):
                part = _raw_part(r, snap, space, slab.slice(lo, hi))
                if part is not None:
                    raw_parts.append(part)
            else:
                rollup = _rollup_part(r, snap, space, slab, lo, hi)
                if rollup is not None:
                    rollup_parts.append(rollup)
    return raw_parts, rollup_parts, scanned


def _raw_part(r: Resolved, snap: MetricSnapshot, space: KeySpace, view: RawChunk) -> RawPart | None:
    index = None
    if r.filter is not None:
        mask = evaluate(
            r.filter, view.columns.__getitem__, snap.dictionaries, snap.sizes, view.size
        )
        if not mask.all():
            index = np.flatnonzero(mask)
            if index.size == 0:
                return None
    part = RawPart(view, index)
    part.key = space.keys(part.ts, part.column)
    return part


def _rollup_part(
    r: Resolved, snap: MetricSnapshot, space: KeySpace, block: RollupBlock, lo: int, hi: int
) -> RollupPart | None:
    if r.filter is not None:
        dims = {name: array[lo:hi] for name, array in block.dims.items()}
        mask = evaluate(r.filter, dims.__getitem__, snap.dictionaries, snap.sizes, hi - lo)
        index = np.flatnonzero(mask)
    else:
        index = np.arange(hi - lo)
    if not index.size:
        return None
    key_all = np.full(hi - lo, -1, dtype=np.int64)
    rollup = RollupPart(block, lo, hi, index, key_all)
    key_all[index] = space.keys(block.bucket[lo:hi][index], rollup.column)
    return rollup


def assign_groups(
    raw: list[RawPart],
    rollups: list[RollupPart],
    space: KeySpace,
    budget: QueryBudget,
    per_group: int,
) -> NDArray[np.int64]:
    """Give every part its rows' group ids; returns the key of each group id.

    The id is the key itself when the key space is small enough to index arrays directly (and its
    ``per_group`` bytes fit the budget), else the key's rank among the keys seen.
    """
    limits = budget.limits
    if space.size <= _DENSE_GROUPS and budget.fits(space.size * per_group):
        for p in raw:
            p.gid = p.key
        for q in rollups:
            q.gid_all = q.key_all
            q.gid = q.key_all[q.index]
        return np.arange(space.size, dtype=np.int64)
    keys = [p.key for p in raw] + [q.key_all[q.index] for q in rollups]
    group_keys = np.unique(np.concatenate(keys)) if keys else np.empty(0, dtype=np.int64)
    groups = int(group_keys.size)
    if groups > limits.max_groups:
        too_many(groups, limits)
    budget.reserve(groups * per_group, "/groupBy", f"{groups:,} groups")
    for p in raw:
        p.gid = np.searchsorted(group_keys, p.key)
    for q in rollups:
        q.gid_all = np.where(q.key_all >= 0, np.searchsorted(group_keys, q.key_all), -1)
        q.gid = q.gid_all[q.index]
    return group_keys


def keep_groups(
    raw: list[RawPart],
    rollups: list[RollupPart],
    group_keys: NDArray[np.int64],
    present: NDArray[np.intp],
) -> NDArray[np.int64]:
    """Renumber the parts' group ids to ``present`` (ascending ids) only; returns their keys."""
    renumber = np.full(group_keys.size, -1, dtype=np.int64)
    renumber[present] = np.arange(present.size)
    for p in raw:
        p.gid = renumber[p.gid]
    for q in rollups:
        q.gid_all = np.where(q.gid_all >= 0, renumber[np.maximum(q.gid_all, 0)], -1)
        q.gid = q.gid_all[q.index]
    return group_keys[present]


def too_many(groups: int, limits: Limits) -> None:
    raise InputError(
        "/groupBy",
        f"the query makes {groups} groups",
        [
            f"at most {limits.max_groups} (M1_QUERY_MAX_GROUPS)",
            "fewer groupBy fields",
            "a coarser interval",
            "more filters",
        ],
    )


def decode(f: FieldSpec, codes: NDArray[np.int64], snap: MetricSnapshot) -> NDArray[np.object_]:
    """Values of a string or boolean field's codes (None for null)."""
    if f.kind is Kind.STR:
        return snap.dictionaries[f.name].decode(codes, snap.sizes[f.name])
    table = np.array([False, True, None], dtype=object)
    decoded: NDArray[np.object_] = table[np.where(codes < 0, 2, codes)]
    return decoded
