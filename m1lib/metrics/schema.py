"""The six metrics and their declared fields: what an event may carry, and what rollups keep.

A field is a *dimension* when rollups group by it: low-cardinality labels an operator filters and
groups on (tool, scope, decision, reason...). Free text and per-caller values (``subject``,
``error``, ``message``, ``metadata``) and every number are not dimensions: filtering or grouping on them needs raw
events, which are kept ``M1_RAW_RETENTION``. Every numeric field is a *measure*: rollups keep its
count, sum, min, max, sum of squared deviations and a quantile sketch.

=================  =============================================  ==============================
metric             dimensions                                     measures (default first)
=================  =============================================  ==============================
policy_decisions   toolName, scope, allowed, reason               checkMs
tool_executions    toolName, scope, success                       durationMs
cache_operations   cache, toolName, op, hit                       latencyMs
cost_updates       model, toolName, component                     costUsd, inputTokens, outputTokens
error_alerts       level, source                                  (none)
health_checks      component, status                              latencyMs
=================  =============================================  ==============================

Every event also has ``timestamp`` and ``replica`` (the recording replica; not a dimension).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Final

from m1lib.epoch import to_us
from m1lib.errors import InputError

__all__ = [
    "FLOAT_LIMIT",
    "INT_LIMIT",
    "METRICS",
    "REPLICA_FIELD",
    "TIMESTAMP_LIMIT_S",
    "FieldSpec",
    "Kind",
    "MetricSpec",
    "checked_timestamp_us",
    "metric_spec",
    "timestamp_us",
]

MAX_TEXT = 2000  # longest string field value; longer is a caller bug, not an event
INT_LIMIT: Final = 2**53
"""Largest magnitude of an int field. Rollups keep sum, min and max as float64 and queries give
integer fields back as integers: float64 holds every integer up to 2**53 exactly, and 2**63 - 1
would come back as -2**63."""
FLOAT_LIMIT: Final = 4e17
"""Largest magnitude of a float field: the quantile sketch's last bucket ends at about 4.007e17
(beyond it values are clamped and percentiles lose their 1 % bound), and below it the sum and
the sum of squared deviations of any number of events stay finite (1e308 twice sums to
infinity; 1e200 and -1e200 have an infinite M2)."""
TIMESTAMP_LIMIT_S: Final = 253402300800  # epoch seconds of 10000-01-01: timestamps end before
REPLICA_FIELD: Final = "replica"
_MISSING: Final = object()


class Kind(StrEnum):
    """The type of a field, as JSON names it."""

    STR = "str"
    BOOL = "bool"
    INT = "int"
    FLOAT = "float"


_KIND_TEXT = {
    Kind.STR: "a string",
    Kind.BOOL: "true or false",
    Kind.INT: "an integer",
    Kind.FLOAT: "a number",
}
_LIMITS: Mapping[Kind, float] = {Kind.INT: INT_LIMIT, Kind.FLOAT: FLOAT_LIMIT}


@dataclass(frozen=True)
class FieldSpec:
    """One declared field of a metric."""

    name: str
    kind: Kind
    optional: bool = False
    choices: tuple[str, ...] | None = None
    dimension: bool = False

    @property
    def numeric(self) -> bool:
        return self.kind in (Kind.INT, Kind.FLOAT)

    @property
    def limit(self) -> float | None:
        """Largest magnitude a numeric field holds (None for strings and booleans)."""
        return _LIMITS.get(self.kind)

    @property
    def coded(self) -> bool:
        """Stored as small integer codes (strings via a dictionary, booleans as 0/1)."""
        return self.kind in (Kind.STR, Kind.BOOL)

    def describe(self) -> str:
        text = _KIND_TEXT[self.kind]
        if self.kind is Kind.INT:
            text += f" from {-INT_LIMIT} to {INT_LIMIT}"
        elif self.kind is Kind.FLOAT:
            text += f" from {-FLOAT_LIMIT:g} to {FLOAT_LIMIT:g}"
        if self.choices:
            text = "one of " + ", ".join(self.choices)
        return text + (" or null" if self.optional else "")


@dataclass(frozen=True)
class MetricSpec:
    """A metric: its declared fields (the replica field included), dimensions and measures."""

    name: str
    declared: tuple[FieldSpec, ...]
    value_field: str | None
    description: str
    fields: tuple[FieldSpec, ...] = field(init=False)
    by_name: Mapping[str, FieldSpec] = field(init=False)
    dimensions: tuple[str, ...] = field(init=False)
    measures: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        replica = FieldSpec(REPLICA_FIELD, Kind.STR)
        every = (*self.declared, replica)
        object.__setattr__(self, "fields", every)
        object.__setattr__(self, "by_name", {f.name: f for f in every})
        object.__setattr__(self, "dimensions", tuple(f.name for f in every if f.dimension))
        measures = [f.name for f in every if f.numeric]
        if self.value_field is not None:  # the default value field first
            measures.remove(self.value_field)
            measures.insert(0, self.value_field)
        object.__setattr__(self, "measures", tuple(measures))

    def field_names(self) -> list[str]:
        return [f.name for f in self.fields]

    def validator(self) -> Callable[[Mapping[str, Any], int, str], tuple[Any, ...]]:
        return _VALIDATORS[self.name]


def _dim(name: str, kind: Kind = Kind.STR, **kwargs: Any) -> FieldSpec:
    return FieldSpec(name, kind, dimension=True, **kwargs)


_SCOPES = ("read", "write", "execute")

METRICS: Final[Mapping[str, MetricSpec]] = {
    spec.name: spec
    for spec in (
        MetricSpec(
            "policy_decisions",
            (
                _dim("toolName"),
                _dim("scope", choices=_SCOPES),
                _dim("allowed", Kind.BOOL),
                _dim("reason"),
                FieldSpec("subject", Kind.STR),
                FieldSpec("checkMs", Kind.FLOAT),
            ),
            "checkMs",
            "Every policy decision: allowed or denied, why, and how long the check took.",
        ),
        MetricSpec(
            "tool_executions",
            (
                _dim("toolName"),
                _dim("scope", choices=_SCOPES),
                _dim("success", Kind.BOOL),
                FieldSpec("durationMs", Kind.FLOAT),
                FieldSpec("error", Kind.STR, optional=True),
            ),
            "durationMs",
            "Every tool run an agent made: success, duration and the error text if any.",
        ),
        MetricSpec(
            "cache_operations",
            (
                _dim("cache"),
                _dim("toolName", optional=True),
                _dim("op", choices=("get", "set", "evict")),
                _dim("hit", Kind.BOOL),
                FieldSpec("latencyMs", Kind.FLOAT),
            ),
            "latencyMs",
            "Every cache get, set and evict, with hit or miss and latency.",
        ),
        MetricSpec(
            "cost_updates",
            (
                _dim("model"),
                _dim("toolName"),
                _dim("component"),
                FieldSpec("inputTokens", Kind.INT),
                FieldSpec("outputTokens", Kind.INT),
                FieldSpec("costUsd", Kind.FLOAT),
            ),
            "costUsd",
            "Every priced model call: tokens in and out and what it cost.",
        ),
        MetricSpec(
            "error_alerts",
            (
                _dim("level", choices=("warning", "critical")),
                _dim("source"),
                FieldSpec("message", Kind.STR),
                FieldSpec("metadata", Kind.STR, optional=True),  # JSON text (m1lib.alerts)
            ),
            None,
            "Every raised alert: level, source, message and metadata (a JSON object as text).",
        ),
        MetricSpec(
            "health_checks",
            (
                _dim("component"),
                _dim("status", choices=("healthy", "degraded", "unhealthy")),
                FieldSpec("latencyMs", Kind.FLOAT),
            ),
            "latencyMs",
            "Every health check of a component: its status and how long the check took.",
        ),
    )
}


def metric_spec(name: Any, path: str = "metric") -> MetricSpec:
    """The spec of ``name``, or an InputError that lists the metrics."""
    spec = METRICS.get(name) if isinstance(name, str) else None
    if spec is None:
        raise InputError(path, f"{name!r} is not a metric", sorted(METRICS))
    return spec


# -- timestamps ------------------------------------------------------------------------------

_US_PER_S = 1_000_000


_TIMESTAMP_ALLOWED = ("an aware datetime", f"epoch seconds from 0 to {TIMESTAMP_LIMIT_S}")


def timestamp_us(value: Any, path: str = "timestamp") -> int:
    """Microseconds since the epoch from an aware datetime or epoch seconds (int or float)."""
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise InputError(path, "is a naive datetime", _TIMESTAMP_ALLOWED)
        return to_us(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = _as_float(value)
        if 0 <= seconds < TIMESTAMP_LIMIT_S:  # false for NaN
            return round(seconds * _US_PER_S)
    raise InputError(path, f"{_shown(value)} is not a timestamp", _TIMESTAMP_ALLOWED)


def checked_timestamp_us(value: Any, path: str = "timestamp") -> int:
    """``value`` when it is microseconds since the epoch as M1's own code passes them (an int
    from 0 to the end of year 9999), else an InputError."""
    if type(value) is int and 0 <= value < TIMESTAMP_LIMIT_S * _US_PER_S:
        return value
    allowed = [f"microseconds from 0 to {TIMESTAMP_LIMIT_S * _US_PER_S}"]
    raise InputError(path, f"{_shown(value)} is not a timestamp", allowed)


def _as_float(value: Any) -> float:
    """``float(value)``, or infinity for a number too large for a float (an int of 400 digits)."""
    try:
        return float(value)
    except OverflowError:
        return math.inf


def _shown(value: Any) -> str:
    """``repr(value)`` for an error message, shortened (an int may be too long to print)."""
    try:
        text = repr(value)
    except ValueError:  # over sys.get_int_max_str_digits()
        return f"an integer of {value.bit_length()} bits"
    return text if len(text) <= 100 else text[:97] + "..."


# -- validation ------------------------------------------------------------------------------
#
# One closure per metric, built once: the fast path is a dict lookup and an exact type check per
# field, because record_event sits on the policy engine's hot path.


def _slow_value(spec: FieldSpec, value: Any, where: str) -> Any:
    """The checks the fast path skipped: missing, null, numeric coercion, choices, length."""
    path = f"{where}.{spec.name}"
    if value is _MISSING or value is None:
        if spec.optional:
            return None
        problem = "is missing" if value is _MISSING else "is null"
        raise InputError(path, problem, [spec.describe()])
    kind = spec.kind
    number_like = isinstance(value, numbers.Real) and not isinstance(value, bool)  # numpy too
    if kind is Kind.FLOAT and number_like:
        number = _as_float(value)
        if -FLOAT_LIMIT <= number <= FLOAT_LIMIT:
            return number
        finite = math.isfinite(number) or isinstance(value, numbers.Integral)  # 10**400 too
        problem = "is out of range" if finite else "is not a finite number"
        raise InputError(path, f"{_shown(value)} {problem}", [spec.describe()])
    if kind is Kind.INT and number_like:
        # numpy integers too; integral floats (not inf or NaN)
        if isinstance(value, numbers.Integral) or _as_float(value).is_integer():
            integer = int(value)
        else:
            raise InputError(path, f"{_shown(value)} is not an integer", [spec.describe()])
        if -INT_LIMIT <= integer <= INT_LIMIT:
            return integer
        raise InputError(path, f"{_shown(value)} is out of range", [spec.describe()])
    if kind is Kind.BOOL and type(value) is bool:
        return value
    if kind is Kind.STR and isinstance(value, str):
        if spec.choices is not None and value not in spec.choices:
            raise InputError(path, f"{_shown(value)} is not allowed", list(spec.choices))
        if len(value) > MAX_TEXT:
            raise InputError(path, f"is {len(value)} characters long", [f"at most {MAX_TEXT}"])
        return str(value)
    raise InputError(path, f"{_shown(value)} is {type(value).__name__}", [spec.describe()])


def _unknown_field(
    spec: MetricSpec, fields: Mapping[str, Any], allowed_extra: frozenset[str], where: str
) -> InputError:
    known = {f.name for f in spec.declared} | allowed_extra
    for name in fields:
        if name not in known:
            if name == REPLICA_FIELD:
                problem = "is set by the recording replica, not by the caller"
            else:
                problem = f"{name!r} is not a field of {spec.name}"
            allowed = [f.name for f in spec.declared]
            return InputError(f"{where}.{name}", problem, allowed)
    return InputError(where, "has a field twice", [f.name for f in spec.declared])


def _make_validator(spec: MetricSpec) -> Callable[[Mapping[str, Any], int, str], tuple[Any, ...]]:
    fast: dict[Kind, type[Any]] = {Kind.STR: str, Kind.BOOL: bool, Kind.INT: int, Kind.FLOAT: float}
    plan = tuple(
        (
            f.name,
            fast[f.kind],
            None if f.limit is None else (-f.limit, f.limit),
            frozenset(f.choices) if f.choices else None,
            f,
        )
        for f in spec.declared
    )
    extra_names = frozenset({"metric", "timestamp"})

    def validate(fields: Mapping[str, Any], extra: int, where: str) -> tuple[Any, ...]:
        """The values in declared order; ``extra`` is how many keys are not fields."""
        values: list[Any] = []
        present = extra
        for name, expected, bounds, choices, field_spec in plan:
            value: Any = fields.get(name, _MISSING)
            if type(value) is expected:
                present += 1
                if bounds is not None:
                    if not bounds[0] <= value <= bounds[1]:  # out of range, infinite or NaN
                        value = _slow_value(field_spec, value, where)
                elif (choices is not None and value not in choices) or (
                    expected is str and len(value) > MAX_TEXT
                ):
                    value = _slow_value(field_spec, value, where)
            else:
                if value is not _MISSING:
                    present += 1
                if expected is str and isinstance(value, str):  # a StrEnum member, say
                    value = str.__str__(value)  # stored as plain text
                    if (choices is not None and value not in choices) or len(value) > MAX_TEXT:
                        value = _slow_value(field_spec, value, where)
                else:
                    value = _slow_value(field_spec, value, where)
            values.append(value)
        if present != len(fields):
            raise _unknown_field(spec, fields, extra_names if extra else frozenset(), where)
        return tuple(values)

    return validate


_VALIDATORS = {name: _make_validator(spec) for name, spec in METRICS.items()}
