"""What a query returns: columns kept as arrays, turned into rows, a DataFrame or JSON on demand.

The engine hands over columns; building ten thousand Python dicts is paid only by callers that ask
for ``rows`` (or ``to_dict``), and ``to_frame`` goes from arrays to pandas without them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from numpy.typing import NDArray

from m1lib.epoch import from_us, to_us

if TYPE_CHECKING:
    import pandas

__all__ = ["Anomaly", "ColumnKind", "QueryMeta", "QueryResult", "Trend", "iso"]

ColumnKind = Literal["bucket", "int", "float", "object"]


def iso(moment: datetime) -> str:
    """ISO-8601 in UTC with a ``Z``."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else value


@dataclass(frozen=True)
class Trend:
    """A least-squares line through a bucket series and whether its slope is significant."""

    field: str
    direction: Literal["up", "down", "flat"]
    slope: float  # change per bucket
    change_pct: float | None  # fitted last vs fitted first bucket; None when the first is 0
    p_value: float | None  # two-sided t-test of slope = 0; None below 3 points
    r_squared: float | None
    points: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "field": self.field,
            "direction": self.direction,
            "slope": _finite(self.slope) or 0.0,
            "changePct": _finite(self.change_pct),
            "pValue": _finite(self.p_value),
            "rSquared": _finite(self.r_squared),
            "points": self.points,
        }


@dataclass(frozen=True)
class Anomaly:
    """One bucket whose value stands out from the window before it."""

    bucket: datetime
    value: float
    score: float
    field: str
    group: Mapping[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "bucket": iso(self.bucket),
            "value": self.value,
            "score": self.score,
            "field": self.field,
        }
        if self.group is not None:
            out["group"] = dict(self.group)
        return out


@dataclass(frozen=True)
class QueryMeta:
    """How a query was answered."""

    execution_ms: float
    rows_scanned: int
    source: Literal["rollup", "raw"]
    percentile_error_bound: float | None  # relative; 0 when exact; None without percentiles
    dropped_events: int
    range_from: datetime  # the range answered (edges round down beyond the raw retention)
    range_to: datetime
    resolutions: list[str] = field(default_factory=list)
    total_rows: int = 0  # rows before offset and limit
    truncated: bool = False  # cut at M1_QUERY_MAX_ROWS because no limit was given
    total_anomalies: int = 0  # anomalies found; at most M1_QUERY_MAX_ROWS (the strongest) are shown

    def to_dict(self) -> dict[str, Any]:
        return {
            "executionMs": round(self.execution_ms, 3),
            "rowsScanned": self.rows_scanned,
            "source": self.source,
            "percentileErrorBound": self.percentile_error_bound,
            "droppedEvents": self.dropped_events,
            "from": iso(self.range_from),
            "to": iso(self.range_to),
            "resolutions": list(self.resolutions),
            "totalRows": self.total_rows,
            "truncated": self.truncated,
            "totalAnomalies": self.total_anomalies,
        }


class QueryResult:
    """Rows of a query, with anomalies, trend and how it was answered.

    ``rows`` are dicts: groupBy fields, ``bucket`` (aware UTC datetime) with an interval, one key
    per aggregation output; nulls are None. ``to_frame()`` gives pandas, ``to_dict()`` JSON-ready.
    """

    def __init__(
        self,
        *,
        columns: Mapping[str, NDArray[Any]],
        kinds: Mapping[str, ColumnKind],
        anomalies: list[Anomaly],
        trend: Trend | None,
        meta: QueryMeta,
    ) -> None:
        self.columns = dict(columns)
        self.kinds = dict(kinds)
        self.anomalies = anomalies
        self.trend = trend
        self.meta = meta

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0

    def __repr__(self) -> str:
        return f"<QueryResult {len(self)} rows, source={self.meta.source}>"

    def _python_columns(self, *, json_ready: bool) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {}
        for name, array in self.columns.items():
            kind = self.kinds[name]
            values = array.tolist()
            if kind == "bucket":
                moments = [from_us(v) for v in values]
                out[name] = [iso(m) for m in moments] if json_ready else moments
            elif kind == "float":
                out[name] = [None if v != v or v in (math.inf, -math.inf) else v for v in values]
            else:
                out[name] = values
        return out

    @cached_property
    def rows(self) -> list[dict[str, Any]]:
        return self._rows(json_ready=False)

    def _rows(self, *, json_ready: bool) -> list[dict[str, Any]]:
        columns = self._python_columns(json_ready=json_ready)
        names = list(columns)
        return [
            dict(zip(names, values, strict=True)) for values in zip(*columns.values(), strict=True)
        ]

    def to_dict(self) -> dict[str, Any]:
        """``{"rows", "trend", "anomalies", "meta"}`` with only JSON types (no NaN, ISO buckets)."""
        return {
            "rows": self._rows(json_ready=True),
            "trend": None if self.trend is None else self.trend.to_dict(),
            "anomalies": [a.to_dict() for a in self.anomalies],
            "meta": self.meta.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> QueryResult:
        """The result :meth:`to_dict` gave (an API's answer): ``rows`` as here (``bucket``
        back to datetimes), ``meta``, ``trend``, ``anomalies``. Column kinds come from the
        values (all integers: int; numbers or nulls: float); with no rows there are no columns.
        """
        rows = list(data.get("rows") or [])
        columns: dict[str, NDArray[Any]] = {}
        kinds: dict[str, ColumnKind] = {}
        for name in rows[0] if rows else ():
            values = [row.get(name) for row in rows]
            kind = _kind_of(name, values)
            kinds[name] = kind
            if kind == "bucket":
                columns[name] = np.array([to_us(_moment(v)) for v in values], dtype=np.int64)
            elif kind == "int":
                columns[name] = np.array(values, dtype=np.int64)
            elif kind == "float":
                columns[name] = np.array(
                    [math.nan if v is None else v for v in values], dtype=np.float64
                )
            else:
                columns[name] = np.array(values, dtype=object)
        trend = data.get("trend")
        return cls(
            columns=columns,
            kinds=kinds,
            anomalies=[_anomaly(a) for a in data.get("anomalies") or []],
            trend=None if trend is None else _trend(trend),
            meta=_meta(data["meta"]),
        )

    def to_frame(self) -> pandas.DataFrame:
        """The rows as a DataFrame; ``bucket`` is ``datetime64[us, UTC]``, nulls NaN/None."""
        import pandas as pd

        data: dict[str, Any] = {}
        for name, array in self.columns.items():
            if self.kinds[name] == "bucket":
                data[name] = pd.to_datetime(array, unit="us", utc=True)
            else:
                data[name] = array
        return pd.DataFrame(data, columns=list(self.columns))


# -- reading a result's JSON back (a query answered by the API) --------------------------------


def _moment(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _kind_of(name: str, values: list[Any]) -> ColumnKind:
    if name == "bucket" and all(isinstance(v, str) for v in values):
        return "bucket"
    present = [v for v in values if v is not None]
    if present and all(type(v) is int for v in values):
        return "int"
    if present and all(type(v) in (int, float) for v in present):
        return "float"
    return "object"


def _trend(data: Mapping[str, Any]) -> Trend:
    return Trend(
        field=data["field"],
        direction=data["direction"],
        slope=float(data["slope"]),
        change_pct=data.get("changePct"),
        p_value=data.get("pValue"),
        r_squared=data.get("rSquared"),
        points=int(data["points"]),
    )


def _anomaly(data: Mapping[str, Any]) -> Anomaly:
    return Anomaly(
        bucket=_moment(data["bucket"]),
        value=float(data["value"]),
        score=float(data["score"]),
        field=data["field"],
        group=data.get("group"),
    )


def _meta(data: Mapping[str, Any]) -> QueryMeta:
    return QueryMeta(
        execution_ms=float(data["executionMs"]),
        rows_scanned=int(data["rowsScanned"]),
        source=data["source"],
        percentile_error_bound=data.get("percentileErrorBound"),
        dropped_events=int(data["droppedEvents"]),
        range_from=_moment(data["from"]),
        range_to=_moment(data["to"]),
        resolutions=list(data.get("resolutions") or []),
        total_rows=int(data.get("totalRows", 0)),
        truncated=bool(data.get("truncated", False)),
        total_anomalies=int(data.get("totalAnomalies", 0)),
    )
