"""Filters: checked against a metric's fields once, then evaluated as numpy masks.

String fields are dictionary codes, so a string predicate runs once per distinct value (a lookup
table indexed by code, null at index -1) and the events are only indexed: ``contains`` over a
million events costs one Python call per distinct tool name, not per event.

Semantics: ``ne`` and ``nin`` are the negation of ``eq`` and ``in`` (so they keep nulls);
``eq``/``ne`` with null test for null; every other comparison is false on null; ``exists`` takes
true (the default) or false. Strings compare by code point.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from m1lib.errors import InputError
from m1lib.metrics.columns import StringDictionary
from m1lib.metrics.query import Filter
from m1lib.metrics.schema import FieldSpec, Kind, MetricSpec

__all__ = [
    "Condition",
    "Group",
    "Node",
    "compile_filter",
    "compile_filters",
    "conditions",
    "evaluate",
]

MAX_DEPTH = 8
_ORDERED = ("gt", "gte", "lt", "lte")
_KIND_NAMES = {
    Kind.STR: "a string",
    Kind.BOOL: "true or false",
    Kind.INT: "a number",
    Kind.FLOAT: "a number",
}


@dataclass(frozen=True)
class Condition:
    field: FieldSpec
    op: str
    value: Any
    path: str


@dataclass(frozen=True)
class Group:
    conjunction: Literal["and", "or"]
    children: tuple[Node, ...]


Node = Condition | Group


def _fits(kind: Kind, value: Any) -> bool:
    if kind is Kind.STR:
        return isinstance(value, str)
    if kind is Kind.BOOL:
        return isinstance(value, bool)
    return isinstance(value, int | float) and not isinstance(value, bool) and value == value


def _check_value(f: FieldSpec, op: str, value: Any, path: str) -> Any:
    kind_text = _KIND_NAMES[f.kind]
    if op == "exists":
        if value is None:
            return True
        if not isinstance(value, bool):
            raise InputError(f"{path}/value", f"{value!r} is not true or false", ["true", "false"])
        return value
    if op in ("in", "nin"):
        if not isinstance(value, list):
            raise InputError(f"{path}/value", f"{op} needs a list", [f"a list of {kind_text}s"])
        for i, item in enumerate(value):
            if item is not None and not _fits(f.kind, item):
                raise InputError(
                    f"{path}/value/{i}",
                    f"{item!r} does not fit {f.name} ({f.kind})",
                    [kind_text, "null"],
                )
        return tuple(value)
    if op in ("contains", "startsWith"):
        if f.kind is not Kind.STR:
            raise InputError(
                f"{path}/op",
                f"{op} needs a string field; {f.name} is {f.kind}",
                ["eq", "ne", "gt", "gte", "lt", "lte", "in", "nin", "exists"],
            )
        if not isinstance(value, str):
            raise InputError(f"{path}/value", f"{value!r} is not a string", ["a string"])
        return value
    if op in _ORDERED:
        if f.kind is Kind.BOOL:
            raise InputError(
                f"{path}/op",
                f"{op} does not order true and false ({f.name})",
                ["eq", "ne", "in", "nin", "exists"],
            )
        if not _fits(f.kind, value):
            raise InputError(
                f"{path}/value", f"{value!r} does not fit {f.name} ({f.kind})", [kind_text]
            )
        return value
    if value is not None and not _fits(f.kind, value):  # eq, ne
        raise InputError(
            f"{path}/value", f"{value!r} does not fit {f.name} ({f.kind})", [kind_text, "null"]
        )
    return value


def _compile(item: Filter, spec: MetricSpec, path: str, depth: int) -> Node:
    if depth > MAX_DEPTH:
        raise InputError(
            path, f"filters nest deeper than {MAX_DEPTH} levels", [f"at most {MAX_DEPTH}"]
        )
    if item.is_group:
        conjunction: Literal["and", "or"] = "and" if item.and_ is not None else "or"
        children = tuple(
            _compile(child, spec, f"{path}/{conjunction}/{i}", depth + 1)
            for i, child in enumerate(item.children)
        )
        return Group(conjunction, children)
    assert item.field is not None
    assert item.op is not None
    f = spec.by_name.get(item.field)
    if f is None:
        raise InputError(
            f"{path}/field", f"{item.field!r} is not a field of {spec.name}", spec.field_names()
        )
    return Condition(f, item.op, _check_value(f, item.op, item.value, path), path)


def compile_filter(item: Filter, spec: MetricSpec, path: str) -> Node:
    """Check one filter (a ratio's ``where``) against the metric."""
    return _compile(item, spec, path, 1)


def compile_filters(items: Sequence[Filter], spec: MetricSpec, path: str) -> Node | None:
    """Check ``items`` (ANDed) against the metric; InputError names the exact JSON path."""
    if not items:
        return None
    nodes = tuple(_compile(item, spec, f"{path}/{i}", 1) for i, item in enumerate(items))
    return nodes[0] if len(nodes) == 1 else Group("and", nodes)


def conditions(node: Node | None) -> list[Condition]:
    if node is None:
        return []
    if isinstance(node, Condition):
        return [node]
    return [c for child in node.children for c in conditions(child)]


Columns = Callable[[str], NDArray[Any]]


def evaluate(
    node: Node,
    column: Columns,
    dictionaries: Mapping[str, StringDictionary],
    sizes: Mapping[str, int],
    n: int,
) -> NDArray[np.bool_]:
    """The mask of the ``n`` rows ``column(name)`` describes that ``node`` keeps."""
    if isinstance(node, Group):
        masks = (evaluate(child, column, dictionaries, sizes, n) for child in node.children)
        out = next(masks).copy()
        for mask in masks:
            if node.conjunction == "and":
                out &= mask
            else:
                out |= mask
        return out
    f, op, value = node.field, node.op, node.value
    negate = op in ("ne", "nin")
    base = {"ne": "eq", "nin": "in"}.get(op, op)
    data = column(f.name)
    if f.kind is Kind.STR:
        mask = _string_mask(data, base, value, dictionaries[f.name], sizes[f.name])
    elif f.kind is Kind.BOOL:
        mask = _bool_mask(data, base, value)
    else:
        mask = _number_mask(data, base, value, n)
    return ~mask if negate else mask


def _mask(result: Any) -> NDArray[np.bool_]:
    """numpy comparisons are typed loosely; a mask is what they return."""
    mask: NDArray[np.bool_] = result
    return mask


def _string_mask(
    codes: NDArray[np.int32], op: str, value: Any, d: StringDictionary, size: int
) -> NDArray[np.bool_]:
    if op == "exists":
        return _mask(codes != -1 if value else codes == -1)
    if op == "eq":
        code = -1 if value is None else d.code(value)
        if code is None or code >= size:
            return np.zeros(codes.size, dtype=np.bool_)
        return _mask(codes == code)
    if op == "in":
        wanted = set(value)
        table = d.lookup(wanted.__contains__, None in wanted, size)
    elif op == "contains":
        table = d.lookup(lambda text: value in text, False, size)
    elif op == "startsWith":
        table = d.lookup(lambda text: text.startswith(value), False, size)
    else:
        compare: Callable[[str], bool] = {
            "gt": lambda text: text > value,
            "gte": lambda text: text >= value,
            "lt": lambda text: text < value,
            "lte": lambda text: text <= value,
        }[op]
        table = d.lookup(compare, False, size)
    mask: NDArray[np.bool_] = table[codes]
    return mask


def _bool_mask(codes: NDArray[np.int8], op: str, value: Any) -> NDArray[np.bool_]:
    def code(item: Any) -> int:
        return -1 if item is None else int(bool(item))

    if op == "exists":
        return _mask(codes != -1 if value else codes == -1)
    if op == "eq":
        return _mask(codes == code(value))
    return np.isin(codes, [code(item) for item in value])  # in


def _number_mask(data: NDArray[Any], op: str, value: Any, n: int) -> NDArray[np.bool_]:
    # events' numbers are never null; a result's float column (having) is NaN where null
    null = np.isnan(data) if data.dtype.kind == "f" else np.zeros(n, dtype=np.bool_)
    if op == "exists":
        return ~null if value else null
    if op == "eq":
        if value is None:
            return null
        return _mask(data == value)
    if op == "in":
        numbers = [item for item in value if item is not None]
        return np.isin(data, numbers) if numbers else np.zeros(n, dtype=np.bool_)
    compare = {"gt": np.greater, "gte": np.greater_equal, "lt": np.less, "lte": np.less_equal}[op]
    return _mask(compare(data, value))
