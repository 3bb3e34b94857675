"""From a valid query to a plan: its meaning checked against the metric, and where to read it.

:func:`resolve` turns names into fields and checks every member against the metric (a 400 names
the JSON path). :func:`choose_segments` splits the time range by source: whole hours from 1-hour
rollups, whole minutes from 1-minute rollups, the ragged edges from raw events; it compares that
plan's cost (rows and sketch entries read) with reading raw events only, and takes the cheaper.
Queries that need raw events (a non-dimension field, ``exact``, ``first``/``last``, an interval
that splits minutes) read raw only, and a range older than the raw retention is a 400 that names
the field and the retention. Beyond the raw retention the range's edges are rounded down to the
rollup resolution available there; ``meta.from``/``meta.to`` report the range answered.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

from m1lib.epoch import to_us
from m1lib.errors import InputError
from m1lib.metrics.budget import Limits
from m1lib.metrics.columns import RawChunk
from m1lib.metrics.filters import Node, compile_filter, compile_filters, conditions
from m1lib.metrics.query import AGGREGATION_OPS, Aggregation, Filter, Query, duration_us
from m1lib.metrics.rollup import RollupBlock
from m1lib.metrics.schema import FieldSpec, Kind, MetricSpec, metric_spec
from m1lib.metrics.slab import overlapping
from m1lib.metrics.store import HOUR_US, MINUTE_US, RESOLUTIONS, MetricSnapshot

__all__ = [
    "AggregationPlan",
    "Choice",
    "Limits",
    "Prefer",
    "Resolved",
    "Segment",
    "choose_segments",
    "resolve",
]

RAW: Final = 0  # Segment.resolution of raw events
# Aggregations over a numeric field: every op but those that count, rate, pick or compare rows.
_NUMERIC_OPS = frozenset(AGGREGATION_OPS) - {"count", "rate", "distinct", "first", "last", "ratio"}
_DEFAULT_FIELD_OPS = _NUMERIC_OPS | {"first", "last"}
_LABELS = {RAW: "raw", **{res: label for label, res in RESOLUTIONS.items()}}


@dataclass(frozen=True)
class AggregationPlan:
    index: int
    op: str
    keys: tuple[str, ...]
    field: FieldSpec | None
    percentiles: tuple[float, ...]
    where: Node | None
    path: str


@dataclass(frozen=True)
class Resolved:
    """A query with its names resolved against its metric; times in microseconds."""

    query: Query
    spec: MetricSpec
    start_us: int
    end_us: int
    interval_us: int | None
    group_fields: tuple[FieldSpec, ...]
    filter: Node | None
    aggregations: tuple[AggregationPlan, ...]
    outputs: dict[str, AggregationPlan]
    having: Node | None
    order: tuple[tuple[str, bool], ...]  # (key, descending)
    raw_reason: tuple[str, str] | None  # (JSON path, what needs raw events)
    exact: bool


@dataclass(frozen=True)
class Segment:
    resolution: int  # RAW or a rollup resolution in microseconds
    start_us: int
    end_us: int

    @property
    def label(self) -> str:
        return _LABELS[self.resolution]


def _text(delta_us: int) -> str:
    """``"1d"``, ``"8h20m34s"``: a duration as M1 writes them."""
    seconds = delta_us // 1_000_000
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return "".join(parts) or "0s"


def _field(spec: MetricSpec, name: str, path: str) -> FieldSpec:
    f = spec.by_name.get(name)
    if f is None:
        raise InputError(path, f"{name!r} is not a field of {spec.name}", spec.field_names())
    return f


def _aggregation(a: Aggregation, i: int, query: Query, spec: MetricSpec) -> AggregationPlan:
    path = f"/aggregations/{i}"
    name = a.field
    if name is None and a.op in _DEFAULT_FIELD_OPS | {"distinct"}:
        name = query.field
        if name is None and a.op in _DEFAULT_FIELD_OPS:
            name = spec.value_field
    f = None if name is None else _field(spec, name, f"{path}/field")
    numeric = [g.name for g in spec.fields if g.numeric]
    if a.op in _NUMERIC_OPS or (a.op == "rate" and f is not None):
        if f is None:
            raise InputError(
                f"{path}/field",
                f"{a.op} needs a numeric field and {spec.name} has none",
                ["count", "distinct", "ratio", "rate", "first", "last"],
            )
        if not f.numeric:
            raise InputError(
                f"{path}/field", f"{a.op} needs a number; {f.name} is {f.kind}", numeric
            )
    if a.op in ("distinct", "first", "last") and f is None:
        raise InputError(f"{path}/field", f"{a.op} needs a field", spec.field_names())
    where = compile_filter(a.where, spec, f"{path}/where") if a.where is not None else None
    return AggregationPlan(i, a.op, tuple(a.output_keys()), f, a.percentiles, where, path)


def _raw_reason(
    query: Query,
    spec: MetricSpec,
    groups: Sequence[FieldSpec],
    node: Node | None,
    aggs: Sequence[AggregationPlan],
) -> tuple[str, str] | None:
    """The first member of the query that rollups cannot answer, if any."""
    if query.exact:
        return "/exact", "exact"
    if query.interval is not None and (duration_us(query.interval) or 0) % MINUTE_US:
        return "/interval", f"an interval of {query.interval} (not whole minutes)"
    for i, f in enumerate(groups):
        if not f.dimension:
            return f"/groupBy/{i}", f.name
    for condition in conditions(node):
        if not condition.field.dimension:
            return f"{condition.path}/field", condition.field.name
    for a in aggs:
        if a.op in ("first", "last"):
            return a.path, a.op
        counted = a.field
        # rollups keep dimensions as codes and numbers as sums and sketches: they can count a
        # number's values but not tell them apart
        if (
            counted is not None
            and not counted.dimension
            and (a.op == "distinct" or (a.op == "count" and not counted.numeric))
        ):
            return f"{a.path}/field", counted.name
        for condition in conditions(a.where):
            if not condition.field.dimension:
                return f"{condition.path}/field", condition.field.name
    return None


def resolve(query: Query, now_us: int, limits: Limits) -> Resolved:
    """Check ``query`` against its metric and the guards; InputError names the member."""
    spec = metric_spec(query.metric, "/metric")
    if isinstance(query.time_range, str):
        length = duration_us(query.time_range)
        assert length is not None  # the model checked the pattern
        start, end = now_us - length, now_us
    else:
        start, end = to_us(query.time_range.from_), to_us(query.time_range.to)
    max_range = int(limits.max_range.total_seconds() * 1_000_000)
    if end - start > max_range:
        raise InputError(
            "/timeRange",
            f"spans {_text(end - start)}",
            [f"at most {_text(max_range)} (M1_QUERY_MAX_RANGE)"],
        )
    interval = None if query.interval is None else duration_us(query.interval)
    if interval is not None:
        buckets = (end - 1) // interval - start // interval + 1
        if buckets > limits.max_groups:
            raise InputError(
                "/interval",
                f"{query.interval} makes {buckets} buckets",
                [f"at most {limits.max_groups} groups (M1_QUERY_MAX_GROUPS)"],
            )
    coded = [f.name for f in spec.fields if f.coded]
    groups = []
    for i, name in enumerate(query.group_by):
        f = _field(spec, name, f"/groupBy/{i}")
        if not f.coded:
            raise InputError(
                f"/groupBy/{i}", f"{name} is a number; groups are made of labels", coded
            )
        if f in groups:
            raise InputError(f"/groupBy/{i}", f"{name} is grouped twice", coded)
        groups.append(f)
    if query.field is not None:
        _field(spec, query.field, "/field")
    node = compile_filters(query.filters, spec, "/filters")
    aggs = tuple(_aggregation(a, i, query, spec) for i, a in enumerate(query.aggregations))
    taken = {f.name for f in groups} | ({"bucket"} if interval else set())
    outputs: dict[str, AggregationPlan] = {}
    for a in aggs:
        for key in a.keys:
            if key in outputs or key in taken:
                raise InputError(
                    f"{a.path}/as" if query.aggregations[a.index].as_ else a.path,
                    f"output {key!r} appears twice",
                    ["a distinct name in as"],
                )
            outputs[key] = a
    having = _having(query.having, groups, outputs)
    order = []
    orderable = [*outputs, *(f.name for f in groups), *(["bucket"] if interval else [])]
    for i, item in enumerate(query.order_by):
        if item.field not in orderable:
            raise InputError(
                f"/orderBy/{i}/field", f"{item.field!r} is not in the result", orderable
            )
        order.append((item.field, item.direction == "desc"))
    if query.limit is not None and query.limit > limits.max_rows:
        raise InputError(
            "/limit", f"{query.limit} rows", [f"at most {limits.max_rows} (M1_QUERY_MAX_ROWS)"]
        )
    if query.detect is not None:
        if interval is None:
            raise InputError("/detect", "needs buckets to look at", ["an interval, e.g. 5m"])
        numbers = [k for k, plan in outputs.items() if _output_kind(plan) in (Kind.INT, Kind.FLOAT)]
        for name, member in (("trend", query.detect.trend), ("anomaly", query.detect.anomaly)):
            if member is not None and member.field not in numbers:
                problem = (
                    f"{member.field!r} is not a number"
                    if member.field in outputs
                    else f"{member.field!r} is not an output"
                )
                raise InputError(f"/detect/{name}/field", problem, numbers)
    return Resolved(
        query=query,
        spec=spec,
        start_us=start,
        end_us=end,
        interval_us=interval,
        group_fields=tuple(groups),
        filter=node,
        aggregations=aggs,
        outputs=outputs,
        having=having,
        order=tuple(order),
        raw_reason=_raw_reason(query, spec, groups, node, aggs),
        exact=query.exact,
    )


def _having(
    items: Sequence[Filter], groups: Sequence[FieldSpec], outputs: dict[str, AggregationPlan]
) -> Node | None:
    """Having conditions over the result: outputs count as numbers, group fields keep their type."""
    if not items:
        return None
    fields = [FieldSpec(key, _output_kind(plan)) for key, plan in outputs.items()]
    fields += list(groups)
    pseudo = MetricSpec("result", tuple(fields), None, "")
    allowed = [f.name for f in fields]
    for condition in _walk(items):
        if condition.field is not None and condition.field not in allowed:
            raise InputError("/having", f"{condition.field!r} is not in the result", allowed)
    return compile_filters(items, pseudo, "/having")


def _walk(items: Sequence[Filter]) -> list[Filter]:
    out = []
    for item in items:
        out.extend(_walk(item.children) if item.is_group else [item])
    return out


def _output_kind(plan: AggregationPlan) -> Kind:
    if plan.op in ("first", "last") and plan.field is not None:
        return plan.field.kind
    return Kind.FLOAT


# -- where to read -----------------------------------------------------------------------------


def _floor(t: int, res: int) -> int:
    return t - t % res


def _ceil(t: int, res: int) -> int:
    return -((-t) // res) * res


def _split(start: int, end: int, levels: Sequence[int]) -> list[Segment]:
    if start >= end:
        return []
    if not levels:
        return [Segment(RAW, start, end)]
    res = levels[0]
    inner_start, inner_end = _ceil(start, res), _floor(end, res)
    if inner_start >= inner_end:
        return _split(start, end, levels[1:])
    return [
        *_split(start, inner_start, levels[1:]),
        Segment(res, inner_start, inner_end),
        *_split(inner_end, end, levels[1:]),
    ]


def _cost(segments: Sequence[Segment], snap: MetricSnapshot, entries: bool) -> int:
    total = 0
    for segment in segments:
        slabs: Sequence[RawChunk | RollupBlock] = (
            snap.raw if segment.resolution == RAW else snap.rollups[segment.resolution]
        )
        for slab in overlapping(slabs, segment.start_us, segment.end_us):
            lo, hi = slab.bounds(segment.start_us, segment.end_us)
            total += hi - lo
            if entries and isinstance(slab, RollupBlock) and slab.measures:
                offsets = next(iter(slab.measures.values())).offsets
                total += int(offsets[hi] - offsets[lo])
    return total


@dataclass(frozen=True)
class Choice:
    segments: tuple[Segment, ...]
    start_us: int
    end_us: int
    cost: int

    @property
    def source(self) -> Literal["raw", "rollup"]:
        return "raw" if all(s.resolution == RAW for s in self.segments) else "rollup"

    @property
    def resolutions(self) -> list[str]:
        used = {s.resolution for s in self.segments}
        return [_LABELS[res] for res in (HOUR_US, MINUTE_US, RAW) if res in used]


Prefer = Literal["auto", "raw", "rollup"]


def choose_segments(
    r: Resolved, snap: MetricSnapshot, *, need_entries: bool, prefer: Prefer = "auto"
) -> Choice:
    """The cheapest way to read ``[start, end)`` that the retentions allow.

    ``prefer`` pins the source where both can answer (tests and benchmarks compare them).
    """
    start, end = r.start_us, r.end_us
    raw_since = snap.raw_since_us
    raw_only = Choice((Segment(RAW, start, end),), start, end, 0)
    if r.raw_reason is not None:
        if start < raw_since:
            path, what = r.raw_reason
            retention = _text(int(snap.raw_retention.total_seconds() * 1_000_000))
            raise InputError(
                path,
                f"{what} needs raw events, which are kept {retention} "
                f"(M1_RAW_RETENTION); this timeRange starts {_text(raw_since - start)} "
                "before that",
                [
                    f"a timeRange within the last {retention}",
                    "filters and groups on dimensions: " + ", ".join(r.spec.dimensions),
                ],
            )
        return Choice(raw_only.segments, start, end, _cost(raw_only.segments, snap, need_entries))
    levels = [
        res for res in (HOUR_US, MINUTE_US) if r.interval_us is None or r.interval_us % res == 0
    ]
    finest = levels[-1]
    if start >= raw_since:  # raw events can answer every edge: compare both plans
        segments = _split(start, end, levels)
        rolled = Choice(tuple(segments), start, end, _cost(segments, snap, need_entries))
        raw_cost = _cost(raw_only.segments, snap, need_entries)
        if prefer == "raw" or (prefer == "auto" and raw_cost <= rolled.cost):
            return Choice(raw_only.segments, start, end, raw_cost)
        return rolled
    # beyond the raw retention, edges round down to the finest rollup kept there
    start = _round_start(start, levels, snap, r)
    if _floor(end, finest) < raw_since:  # the trailing edge is past the raw retention too
        end = _floor(end, _finest_at(_floor(end, finest), levels, snap))
    end = max(start, end)
    segments = _split(start, end, levels)
    return Choice(tuple(segments), start, end, _cost(segments, snap, need_entries))


def _finest_at(t: int, levels: Sequence[int], snap: MetricSnapshot) -> int:
    for res in reversed(levels):  # finest first
        if t >= snap.rollup_since_us[res]:
            return res
    return levels[0]


def _round_start(start: int, levels: Sequence[int], snap: MetricSnapshot, r: Resolved) -> int:
    for res in reversed(levels):  # the finest rollup that still holds `start`
        if _floor(start, res) >= snap.rollup_since_us[res]:
            return _floor(start, res)
    coarsest = levels[0]
    if coarsest == MINUTE_US and HOUR_US not in levels:
        kept = _text(int(snap.rollup_retention[MINUTE_US].total_seconds() * 1_000_000))
        raise InputError(
            "/interval",
            f"{r.query.interval} buckets need 1-minute rollups, kept {kept} "
            "(M1_ROLLUP_RETENTION_1M); this timeRange starts before that",
            ["an interval in whole hours", f"a timeRange within the last {kept}"],
        )
    # older than every retention: nothing is kept before the coarsest tier's start
    return max(_floor(start, coarsest), snap.rollup_since_us[coarsest])
