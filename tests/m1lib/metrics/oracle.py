"""The query DSL computed directly with pandas on the raw events: what every answer must match.

Written independently of the engine (row by row where it is clearer), following the semantics of
docs/contracts.md: half-open ranges, epoch-aligned buckets, ne/nin negate eq/in, comparisons are
false on null, percentiles interpolate linearly, stddev/variance are sample (n - 1).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from m1lib.metrics.query import duration_us
from m1lib.metrics.schema import METRICS

PERCENTILES = {"median": [50.0], "p50": [50.0], "p90": [90.0], "p95": [95.0], "p99": [99.0]}


def _null(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _condition(column: pd.Series, op: str, value: Any) -> pd.Series:
    def test(x: Any) -> bool:
        if op == "exists":
            return (not _null(x)) if value in (None, True) else _null(x)
        if op == "eq":
            return _null(x) if value is None else (not _null(x) and x == value)
        if op == "ne":
            return not test_eq(x)
        if op == "in":
            return any(_null(x) if v is None else (not _null(x) and x == v) for v in value)
        if op == "nin":
            return not any(_null(x) if v is None else (not _null(x) and x == v) for v in value)
        if _null(x):
            return False
        if op == "contains":
            return value in x
        if op == "startsWith":
            return x.startswith(value)
        return {"gt": x > value, "gte": x >= value, "lt": x < value, "lte": x <= value}[op]

    def test_eq(x: Any) -> bool:
        return _null(x) if value is None else (not _null(x) and x == value)

    return column.map(test).astype(bool)


def mask(frame: pd.DataFrame, filters: list[Mapping[str, Any]]) -> pd.Series:
    out = pd.Series(True, index=frame.index)
    for item in filters:
        if "and" in item:
            out &= mask(frame, item["and"])
        elif "or" in item:
            any_of = pd.Series(False, index=frame.index)
            for child in item["or"]:
                any_of |= mask(frame, [child])
            out &= any_of
        else:
            out &= _condition(frame[item["field"]], item["op"], item.get("value"))
    return out


def _aggregations(query: Mapping[str, Any]) -> list[dict[str, Any]]:
    out = []
    for a in query.get("aggregations", ["count"]):
        out.append({"op": a} if isinstance(a, str) else dict(a))
    return out


def _keys(a: Mapping[str, Any]) -> list[str]:
    if a["op"] == "percentiles":
        values = a.get("values") or [50, 95, 99]
        if a.get("as") and len(values) == 1:
            return [a["as"]]
        prefix = a.get("as") or "p"
        return [f"{prefix}{int(v) if float(v).is_integer() else float(v)!r}" for v in values]
    return [a.get("as") or a["op"]]


def oracle(
    frame: pd.DataFrame, query: Mapping[str, Any], start_us: int, end_us: int
) -> pd.DataFrame:
    """Rows of ``query`` over events in ``[start_us, end_us)``; columns as the engine names them."""
    metric = METRICS[query["metric"]]
    data = frame[(frame.ts >= start_us) & (frame.ts < end_us)]
    data = data[mask(data, list(query.get("filters", [])))].copy()
    groups = list(query.get("groupBy", []))
    interval = duration_us(query["interval"]) if query.get("interval") else None
    keys = list(groups)
    if interval:
        data["bucket"] = data.ts // interval * interval
        keys = ["bucket", *groups]
    default_field = query.get("field") or metric.value_field
    rows = []
    grouped = data.groupby(keys, dropna=False, sort=False) if keys else [((), data)]
    for key, part in grouped:
        if len(part) == 0:
            continue
        key = key if isinstance(key, tuple) else (key,)
        row: dict[str, Any] = {k: (None if _null(v) else v) for k, v in zip(keys, key, strict=True)}
        if interval:
            bucket = int(row["bucket"])
            seconds = (min(bucket + interval, end_us) - max(bucket, start_us)) / 1e6
        else:
            seconds = (end_us - start_us) / 1e6
        for a in _aggregations(query):
            op = a["op"]
            name = a.get("field") or (
                default_field if op not in ("count", "rate", "ratio") else None
            )
            if op == "distinct":
                name = a.get("field") or query.get("field")
            values = part[name] if name else None
            out = _keys(a)
            if op == "count":
                row[out[0]] = len(part) if values is None else int(values.notna().sum())
            elif op == "ratio":
                row[out[0]] = float(mask(part, [a["where"]]).mean())
            elif op == "rate":
                amount = len(part) if a.get("field") is None else float(part[a["field"]].sum())
                row[out[0]] = amount / seconds
            elif op == "distinct":
                row[out[0]] = int(values.dropna().nunique())
            elif op in ("first", "last"):
                ordered = part.sort_values("ts", kind="stable")
                value = ordered[name].iloc[-1 if op == "last" else 0]
                row[out[0]] = None if _null(value) else value
            elif op == "sum":
                row[out[0]] = values.sum()
            elif op == "avg":
                row[out[0]] = values.mean()
            elif op == "min":
                row[out[0]] = values.min()
            elif op == "max":
                row[out[0]] = values.max()
            elif op == "stddev":
                row[out[0]] = values.std(ddof=1) if len(values) > 1 else None
            elif op == "variance":
                row[out[0]] = values.var(ddof=1) if len(values) > 1 else None
            else:
                qs = PERCENTILES.get(op) or a.get("values") or [50, 95, 99]
                for k, q in zip(out, qs, strict=True):
                    row[k] = float(np.quantile(values.to_numpy(dtype=float), q / 100.0))
        rows.append(row)
    columns = keys + [k for a in _aggregations(query) for k in _keys(a)]
    result = pd.DataFrame(rows, columns=columns)
    if query.get("having"):
        result = result[mask(result, list(query["having"]))]
    order = [(o["field"], o.get("direction", "asc") == "desc") for o in query.get("orderBy", [])]
    for default in keys:
        if default not in {name for name, _ in order}:
            order.append((default, False))
    if order and len(result):
        result = result.sort_values([name for name, _ in order],
                                    ascending=[not desc for _, desc in order],
                                    kind="stable", na_position="last")  # fmt: skip
    offset = int(query.get("offset", 0))
    limit = query.get("limit")
    return result.iloc[offset : None if limit is None else offset + int(limit)].reset_index(
        drop=True
    )


def approximate_keys(query: Mapping[str, Any]) -> set[str]:
    """Output keys that are sketch percentiles (unless the query asks for exact)."""
    if query.get("exact"):
        return set()
    out: set[str] = set()
    for a in _aggregations(query):
        if a["op"] in PERCENTILES or a["op"] == "percentiles":
            out.update(_keys(a))
    return out


def assert_matches(result_rows: list[dict[str, Any]], expected: pd.DataFrame, query: Mapping[str, Any],
                   *, relative_error: float) -> None:  # fmt: skip
    """Same groups, counts exact, floats to 1e-9, sketch percentiles within ``relative_error``."""
    groups = list(query.get("groupBy", []))
    keys = (["bucket"] if query.get("interval") else []) + groups
    approximate = approximate_keys(query)

    def key_of(row: Mapping[str, Any]) -> tuple[Any, ...]:
        out = []
        for k in keys:
            v = row[k]
            if k == "bucket" and not isinstance(v, int | np.integer):
                v = int(pd.Timestamp(v).value // 1000)
            out.append(None if _null(v) else (v.item() if hasattr(v, "item") else v))
        return tuple(out)

    got = {key_of(row): row for row in result_rows}
    want = {key_of(row): row for row in expected.to_dict("records")}
    assert set(got) == set(want), (
        f"groups differ: extra {set(got) - set(want)}, missing {set(want) - set(got)}"
    )
    for key, row in want.items():
        actual = got[key]
        for column, value in row.items():
            if column in keys:
                continue
            a = actual[column]
            if _null(value):
                assert _null(a), f"{key} {column}: {a!r} != null"
            elif isinstance(value, bool | str) or isinstance(a, bool | str):
                assert a == value, f"{key} {column}: {a!r} != {value!r}"
            elif column in approximate:
                assert abs(a - value) <= relative_error * abs(value) + 1e-12, (
                    f"{key} {column}: {a} vs {value}"
                )
            else:
                assert a == pytest_approx(value), f"{key} {column}: {a!r} != {value!r}"


def pytest_approx(value: float) -> Any:
    import pytest

    return pytest.approx(float(value), rel=1e-9, abs=1e-12)
