"""The query DSL as pydantic models: the seed's form is valid as written; docs/contracts.md has all.

Every structural error carries the JSON path of the offending member (``/filters/0/op``), what was
wrong and, where a closed set exists, what is allowed: validators name their own field instead of
failing the whole object, so the problem+json of a 422 points at one place. What depends on the
metric (which fields exist, which ops suit a field's type) is checked by the planner, as a 400.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal, get_args

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import PydanticCustomError

from m1lib.epoch import EPOCH
from m1lib.errors import InputError
from m1lib.metrics.schema import METRICS

__all__ = [
    "AGGREGATION_OPS",
    "FILTER_OPS",
    "AbsoluteRange",
    "Aggregation",
    "AnomalySpec",
    "Detect",
    "Filter",
    "OrderBy",
    "Query",
    "TrendSpec",
    "duration_us",
    "parse_query",
    "query_json_schema",
]

DEFAULT_PERCENTILES: Final = (50.0, 95.0, 99.0)
MAX_DURATION_DAYS: Final = 36500  # a hundred years: any longer duration means nothing to M1
MAX_FILTERS = 50
MAX_LIST_VALUES = 1000
_DURATION = re.compile(r"^([1-9][0-9]{0,8})([smhd])$")
_UNIT_US = {"s": 1_000_000, "m": 60_000_000, "h": 3_600_000_000, "d": 86_400_000_000}
_MISSING: Final = object()
_INT64: Final = 1 << 63
_NAME = r"^[A-Za-z_][A-Za-z0-9_.]{0,63}$"

FilterOp = Literal[
    "eq", "ne", "gt", "gte", "lt", "lte", "in", "nin", "contains", "startsWith", "exists"
]
AggregationOp = Literal[
    "count",
    "sum",
    "avg",
    "min",
    "max",
    "median",
    "p50",
    "p90",
    "p95",
    "p99",
    "percentiles",
    "stddev",
    "variance",
    "rate",
    "distinct",
    "first",
    "last",
    "ratio",
]
# The lists the schema and error messages use, derived so they cannot drift from the types.
FILTER_OPS: Final = get_args(FilterOp)
AGGREGATION_OPS: Final = get_args(AggregationOp)
MetricName = Literal[
    "policy_decisions",
    "tool_executions",
    "cache_operations",
    "cost_updates",
    "error_alerts",
    "health_checks",
]
assert set(MetricName.__args__) == set(METRICS)  # type: ignore[attr-defined]


def duration_us(text: str) -> int | None:
    """``"5m"`` -> microseconds; None when ``text`` is not a duration (number + s, m, h or d)."""
    match = _DURATION.match(text)
    return None if match is None else int(match.group(1)) * _UNIT_US[match.group(2)]


def _duration(value: Any) -> Any:
    if isinstance(value, str):
        length = duration_us(value)
        if length is None:
            raise PydanticCustomError(
                "duration",
                "'{value}' is not a duration",
                {"value": value, "expected": "'30s', '5m', '24h', '7d'"},
            )
        if length > MAX_DURATION_DAYS * _UNIT_US["d"]:
            raise PydanticCustomError(
                "duration",
                "'{value}' is longer than {days}d",
                {
                    "value": value,
                    "days": MAX_DURATION_DAYS,
                    "expected": f"at most {MAX_DURATION_DAYS}d",
                },
            )
    return value


Duration = Annotated[
    str,
    BeforeValidator(_duration),
    WithJsonSchema({"type": "string", "pattern": _DURATION.pattern, "examples": ["5m", "24h"]}),
]

_SCALAR_SCHEMA: dict[str, Any] = {"type": ["string", "number", "boolean", "null"]}
FilterValue = Annotated[
    Any,
    WithJsonSchema({"anyOf": [_SCALAR_SCHEMA, {"type": "array", "items": _SCALAR_SCHEMA}]}),
]


class Filter(BaseModel):
    """A condition ``{"field", "op", "value"}`` or a group ``{"and": [...]}`` / ``{"or": [...]}``."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    # set from the input's keys before anything else, so each member's check knows the shape
    shape: SkipJsonSchema[Literal["condition", "group"]] = Field("condition", exclude=True)
    and_: list[Filter] | None = Field(None, alias="and", max_length=MAX_FILTERS)
    or_: list[Filter] | None = Field(None, alias="or", max_length=MAX_FILTERS)
    field: str | None = Field(
        None,
        validate_default=True,
        max_length=64,
        description="A field of the metric (conditions only).",
    )
    op: FilterOp | None = Field(None, validate_default=True, description="The comparison.")
    value: FilterValue = Field(
        default_factory=lambda: _MISSING,
        validate_default=True,
        description="A value of the field's type; a list for in/nin; true/false for exists.",
    )

    @model_validator(mode="before")
    @classmethod
    def _shape(cls, data: Any) -> Any:
        if isinstance(data, dict):
            group = "and" in data or "or" in data or "and_" in data or "or_" in data
            return {**data, "shape": "group" if group else "condition"}
        return data

    @field_validator("and_", "or_", mode="after")
    @classmethod
    def _one_group(cls, value: list[Filter] | None, info: ValidationInfo) -> list[Filter] | None:
        if value is not None and info.field_name == "or_" and info.data.get("and_") is not None:
            raise PydanticCustomError("filter_shape", "a group has either and or or, not both")
        if value is not None and not value:
            raise PydanticCustomError(
                "filter_shape", "an empty group matches nothing useful; give at least one condition"
            )
        return value

    @field_validator("field", "op", mode="after")
    @classmethod
    def _condition_member(cls, value: Any, info: ValidationInfo) -> Any:
        group = info.data.get("shape") == "group"
        if group and value is not None:
            raise PydanticCustomError(
                "filter_shape",
                "a group (and or or: a list of filters) has no {name}",
                {"name": info.field_name},
            )
        if not group and value is None:
            expected = (
                ", ".join(f"'{op}'" for op in FILTER_OPS) if info.field_name == "op" else None
            )
            context = {"name": info.field_name} | ({"expected": expected} if expected else {})
            raise PydanticCustomError("missing", "a condition needs {name}", context)
        return value

    @field_validator("value", mode="before")
    @classmethod
    def _value_member(cls, value: Any, info: ValidationInfo) -> Any:
        group = info.data.get("shape") == "group"
        if value is _MISSING:
            if group or info.data.get("op") == "exists":
                return None
            raise PydanticCustomError("missing", "a condition needs value")
        if group:
            raise PydanticCustomError("filter_shape", "a group has no value")
        if isinstance(value, list) and len(value) > MAX_LIST_VALUES:
            raise PydanticCustomError(
                "too_long",
                "has {n} values",
                {"n": len(value), "expected": f"at most {MAX_LIST_VALUES}"},
            )
        for item in value if isinstance(value, list) else [value]:
            _check_number(item)
        return value

    @model_validator(mode="after")
    def _group_has_members(self) -> Filter:
        if self.shape == "group" and self.and_ is None and self.or_ is None:
            raise PydanticCustomError(
                "filter_shape",
                "a group needs a list of filters in and or or, not null",
                {"expected": "and, or"},
            )
        return self

    @property
    def is_group(self) -> bool:
        return self.shape == "group"

    @property
    def children(self) -> list[Filter]:
        return self.and_ or self.or_ or []


def _check_number(value: Any) -> None:
    """A number in a filter is finite and an integer fits int64: what events can hold."""
    if isinstance(value, bool):
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise PydanticCustomError(
            "finite_number",
            "{value} is not a finite number",
            {"value": repr(value), "expected": "a finite number"},
        )
    if isinstance(value, int) and not -_INT64 <= value < _INT64:
        raise PydanticCustomError(
            "number_range",
            "the integer {digits} digits long is out of range",
            {"digits": len(str(abs(value))), "expected": f"-{_INT64}..{_INT64 - 1}"},
        )


def _shorthand(value: Any) -> Any:
    """``"p99"`` means ``{"op": "p99"}``."""
    return {"op": value} if isinstance(value, str) else value


class Aggregation(BaseModel):
    """One output column per group: ``{"op", "field"?, "values"?, "where"?, "as"?}``."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    op: AggregationOp
    field: str | None = Field(
        None, max_length=64, description="The field aggregated; default: the query's field."
    )
    values: list[Annotated[float, Field(ge=0, le=100)]] | None = Field(
        None, min_length=1, max_length=20, description="percentiles only: which, in 0..100."
    )
    where: Filter | None = Field(None, description="ratio only: the events counted as matches.")
    as_: str | None = Field(None, alias="as", pattern=_NAME, description="The output key.")

    @model_validator(mode="after")
    def _members_fit_op(self) -> Aggregation:
        if self.values is not None and self.op != "percentiles":
            raise PydanticCustomError("aggregation", "values belongs to percentiles only")
        if self.op == "ratio" and self.where is None:
            raise PydanticCustomError(
                "aggregation", "ratio needs where: the events that count as matches"
            )
        if self.where is not None and self.op != "ratio":
            raise PydanticCustomError("aggregation", "where belongs to ratio only")
        return self

    @property
    def percentiles(self) -> tuple[float, ...]:
        if self.op == "percentiles":
            return tuple(self.values) if self.values else DEFAULT_PERCENTILES
        if self.op == "median":
            return (50.0,)
        if self.op in ("p50", "p90", "p95", "p99"):
            return (float(self.op[1:]),)
        return ()

    def output_keys(self) -> list[str]:
        if self.op == "percentiles":
            if self.as_ is not None and len(self.percentiles) == 1:
                return [self.as_]
            prefix = self.as_ or "p"
            return [f"{prefix}{_number(p)}" for p in self.percentiles]
        return [self.as_ or self.op]


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


_LAST: Final = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)


def _event_time(value: datetime) -> datetime:
    """Events lie between 1970 and the end of year 9999 (UTC); so must a query's range."""
    # compared as aware datetimes: no conversion that could overflow near year 1 or 9999
    if value < EPOCH or value > _LAST:
        raise PydanticCustomError(
            "time_range",
            "{value} is outside the times events can have",
            {"value": value.isoformat(), "expected": "1970-01-01T00:00:00Z..9999-12-31T23:59:59Z"},
        )
    return value


EventTime = Annotated[AwareDatetime, AfterValidator(_event_time)]


class AbsoluteRange(BaseModel):
    """``{"from", "to"}``: ISO-8601 times with a timezone, half-open ``[from, to)``."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    from_: EventTime = Field(alias="from")
    to: EventTime

    @field_validator("to", mode="after")
    @classmethod
    def _after_from(cls, value: AwareDatetime, info: ValidationInfo) -> AwareDatetime:
        start = info.data.get("from_")
        if start is not None and value <= start:
            raise PydanticCustomError("range", "to must be later than from")
        return value


def _time_range(value: Any) -> Any:
    if isinstance(value, str):
        return _duration(value)
    if isinstance(value, dict):
        return AbsoluteRange.model_validate(value)
    if isinstance(value, AbsoluteRange):
        return value
    raise PydanticCustomError(
        "time_range",
        "is neither a duration nor a range",
        {"expected": '\'24h\', {"from": ..., "to": ...}'},
    )


TimeRange = Annotated[
    str | AbsoluteRange,
    BeforeValidator(_time_range),
    WithJsonSchema(
        {
            "anyOf": [
                {
                    "type": "string",
                    "pattern": _DURATION.pattern,
                    "description": "the last 30s, 5m, 24h, 7d",
                },
                {
                    "type": "object",
                    "required": ["from", "to"],
                    "additionalProperties": False,
                    "properties": {
                        "from": {"type": "string", "format": "date-time"},
                        "to": {"type": "string", "format": "date-time"},
                    },
                },
            ]
        }
    ),
]


class OrderBy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    field: str = Field(max_length=64, description="An output key, a groupBy field or bucket.")
    direction: Literal["asc", "desc"] = "asc"


class TrendSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    field: str = Field(max_length=64, description="The output key whose series is tested.")
    significance: float = Field(0.05, gt=0, lt=1, description="p-value below which a slope counts.")


class AnomalySpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    field: str = Field(max_length=64, description="The output key whose series is scanned.")
    method: Literal["zscore", "mad"] = "zscore"
    window: int = Field(10, ge=3, le=1000, description="Buckets before a point it is compared to.")
    threshold: float = Field(
        2.0, gt=0, le=1000, description="|score| at or above it is an anomaly."
    )


class Detect(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    trend: TrendSpec | None = None
    anomaly: AnomalySpec | None = None


Aggregations = list[Annotated[Aggregation, BeforeValidator(_shorthand)]]


class Query(BaseModel):
    """A dashboard query: one metric, a time range, optional buckets, groups and filters.

    >>> run_query({"metric": "policy_decisions", "timeRange": "24h",
    ...            "groupBy": ["toolName", "scope"],
    ...            "filters": [{"field": "allowed", "op": "eq", "value": False}],
    ...            "aggregations": ["count", "percentiles"]})
    """

    model_config = ConfigDict(
        extra="forbid", populate_by_name=True, frozen=True, title="M1 dashboard query"
    )

    metric: MetricName
    time_range: TimeRange = Field(
        "24h", alias="timeRange", description="A duration ending now, or {from, to}: [from, to)."
    )
    interval: Duration | None = Field(
        None, description="Bucket width; buckets are aligned to the epoch, [start, end)."
    )
    group_by: list[Annotated[str, Field(max_length=64)]] = Field(
        default_factory=list, alias="groupBy", max_length=8
    )
    filters: list[Filter] = Field(default_factory=list, max_length=MAX_FILTERS)
    field: str | None = Field(
        None, max_length=64, description="Default field of aggregations; default: the metric's."
    )
    aggregations: Aggregations = Field(
        default_factory=lambda: [Aggregation(op="count")], min_length=1, max_length=32
    )
    having: list[Filter] = Field(default_factory=list, max_length=MAX_FILTERS)
    order_by: list[OrderBy] = Field(default_factory=list, alias="orderBy", max_length=8)
    limit: int | None = Field(None, ge=1, le=1_000_000)
    offset: int = Field(0, ge=0, le=10_000_000)
    exact: bool = Field(
        False, description="Exact percentiles from raw events (within raw retention)."
    )
    detect: Detect | None = None


def _path(loc: tuple[int | str, ...]) -> str:
    aliases = {
        "time_range": "timeRange",
        "group_by": "groupBy",
        "order_by": "orderBy",
        "and_": "and",
        "or_": "or",
        "as_": "as",
        "from_": "from",
    }
    return "/" + "/".join(aliases.get(str(part), str(part)) for part in loc)


def _allowed(error: Mapping[str, Any]) -> list[str]:
    expected = (error.get("ctx") or {}).get("expected")
    if not expected:
        return []
    return [
        part.strip(" '")
        for part in str(expected).replace(" or ", ",").split(",")
        if part.strip(" '")
    ]


def validation_input_error(error: ValidationError) -> InputError:
    """The first problem of a ValidationError as an InputError (path, problem, allowed)."""
    first = error.errors()[0]
    more = error.error_count() - 1
    problem = first["msg"] + (
        f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    )
    return InputError(_path(tuple(first["loc"])), problem, _allowed(first))


def parse_query(query: Query | Mapping[str, Any] | str | bytes) -> Query:
    """A :class:`Query` from a model, a mapping or JSON text; InputError names what is wrong."""
    if isinstance(query, Query):
        return query
    try:
        if isinstance(query, str | bytes):
            return Query.model_validate_json(query)
        if isinstance(query, Mapping):
            return Query.model_validate(dict(query))
    except ValidationError as error:
        raise validation_input_error(error) from None
    raise InputError(
        "/", f"a query is not {type(query).__name__}", ["Query", "a mapping", "JSON text"]
    )


def query_json_schema() -> dict[str, Any]:
    """The DSL's JSON schema (what ``GET /api/m1/dashboard/schema`` serves)."""
    schema = Query.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema
