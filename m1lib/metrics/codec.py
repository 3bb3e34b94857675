"""Bytes for chunks, rollup blocks and stream batches: what goes to the database and to Redis.

A payload is ``M1C1``, a little-endian u32 header length, a JSON header (kind, metric, the string
dictionaries the codes refer to, each array's dtype and shape) and one zlib stream of the arrays.
Before compression sorted integers (times, buckets, offsets) become differences and floats are
split into byte planes, both of which zlib compresses far better than the raw arrays. Only plain
numeric dtypes are read back: a payload can never make numpy build objects.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from m1lib.errors import M1Error
from m1lib.metrics.columns import RawChunk
from m1lib.metrics.rollup import MeasureRollup, RollupBlock
from m1lib.metrics.schema import Kind, MetricSpec, metric_spec

__all__ = [
    "CodecError",
    "DecodedBlock",
    "DecodedChunk",
    "decode",
    "decode_batch",
    "decode_block",
    "decode_chunk",
    "encode",
    "encode_batch",
    "encode_block",
    "encode_chunk",
]

MAGIC: Final = b"M1C1"
_LEVEL = 6
_DTYPES = frozenset({"<i8", "<i4", "|i1", "<f8", "<u2"})


class CodecError(M1Error):
    """Raised when a payload is not one this version of M1 wrote (or it is damaged)."""


def encode(header: Mapping[str, Any], arrays: Mapping[str, NDArray[Any]]) -> bytes:
    """One payload of a JSON-ready header and named 1-D arrays."""
    specs = []
    parts = []
    for name, array in arrays.items():
        data = np.ascontiguousarray(array)
        if data.dtype.str not in _DTYPES:
            raise CodecError(
                f"array {name!r} has dtype {data.dtype.str}; allowed: {sorted(_DTYPES)}"
            )
        transform = "plain"
        if data.dtype == np.int64 and data.size:
            data = np.diff(data, prepend=np.int64(0))
            transform = "delta"
        elif data.dtype == np.float64 and data.size:
            data = data.view(np.uint8).reshape(-1, 8).T.copy()
            transform = "planes"
        raw = data.tobytes()
        parts.append(raw)
        specs.append(
            {
                "name": name,
                "dtype": array.dtype.str,
                "n": int(array.size),
                "transform": transform,
                "bytes": len(raw),
            }
        )
    head = json.dumps({**header, "arrays": specs}, separators=(",", ":")).encode()
    return MAGIC + struct.pack("<I", len(head)) + head + zlib.compress(b"".join(parts), _LEVEL)


def decode(payload: bytes) -> tuple[dict[str, Any], dict[str, NDArray[Any]]]:
    """The header and arrays of a payload written by :func:`encode`."""
    try:
        if payload[:4] != MAGIC:
            raise CodecError("not an M1 metrics payload (bad magic)")
        (length,) = struct.unpack_from("<I", payload, 4)
        header = json.loads(payload[8 : 8 + length])
        body = zlib.decompress(payload[8 + length :])
        arrays: dict[str, NDArray[Any]] = {}
        position = 0
        for spec in header.pop("arrays"):
            dtype = str(spec["dtype"])
            if dtype not in _DTYPES:
                raise CodecError(
                    f"array {spec['name']!r} has dtype {dtype}; allowed: {sorted(_DTYPES)}"
                )
            raw = body[position : position + int(spec["bytes"])]
            position += int(spec["bytes"])
            n = int(spec["n"])
            if spec["transform"] == "delta":
                array: NDArray[Any] = np.cumsum(np.frombuffer(raw, dtype=np.int64))
            elif spec["transform"] == "planes":
                planes = np.frombuffer(raw, dtype=np.uint8).reshape(8, n)
                array = planes.T.copy().view(np.float64).reshape(n)
            else:
                array = np.frombuffer(raw, dtype=np.dtype(dtype)).copy()
            if array.size != n:
                raise CodecError(f"array {spec['name']!r} has {array.size} values, expected {n}")
            arrays[str(spec["name"])] = array
    except (struct.error, ValueError, KeyError, TypeError, zlib.error) as error:
        raise CodecError(f"damaged metrics payload: {error}") from error
    return header, arrays


# -- raw chunks ------------------------------------------------------------------------------


@dataclass(frozen=True)
class DecodedChunk:
    """A raw chunk as stored: string columns are codes into ``dictionaries`` (its own)."""

    spec: MetricSpec
    ts: NDArray[np.int64]
    columns: dict[str, NDArray[Any]]
    dictionaries: dict[str, list[str]]
    header: dict[str, Any]


def _compact_codes(
    codes: NDArray[np.int32], values: Sequence[str]
) -> tuple[NDArray[np.int32], list[str]]:
    """Codes into a dictionary of only the values used (null stays -1)."""
    if codes.size == 0:
        return codes, []
    used = np.bincount(codes + 1, minlength=len(values) + 1)[1:] > 0
    live = np.flatnonzero(used)
    table = np.full(len(values) + 1, -1, dtype=np.int32)
    table[live] = np.arange(live.size, dtype=np.int32)
    return table[codes], [values[int(i)] for i in live]


def _pack_chunk(
    spec: MetricSpec, chunk: RawChunk, prefix: str
) -> tuple[dict[str, Any], dict[str, NDArray[Any]]]:
    arrays: dict[str, NDArray[Any]] = {f"{prefix}ts": chunk.ts}
    dictionaries = {}
    for f in spec.fields:
        column = chunk.columns[f.name]
        if f.kind is Kind.STR:
            column, dictionaries[f.name] = _compact_codes(column, chunk.dictionaries[f.name].values)
        arrays[f"{prefix}{f.name}"] = column
    return {"metric": spec.name, "dictionaries": dictionaries}, arrays


def _unpack_chunk(
    part: Mapping[str, Any], arrays: Mapping[str, NDArray[Any]], prefix: str, header: dict[str, Any]
) -> DecodedChunk:
    spec = metric_spec(part["metric"])
    ts = arrays[f"{prefix}ts"]
    columns: dict[str, NDArray[Any]] = {}
    dictionaries = {name: list(values) for name, values in part["dictionaries"].items()}
    for f in spec.fields:
        column = arrays.get(f"{prefix}{f.name}")
        if column is None and f.optional and f.kind is Kind.STR:
            # a text field added since the payload was written (error_alerts.metadata): null
            column = np.full(ts.size, -1, dtype=np.int32)
            dictionaries.setdefault(f.name, [])
        elif column is None:
            raise CodecError(f"payload lacks the {spec.name}.{f.name} column")
        columns[f.name] = column
    return DecodedChunk(spec, ts, columns, dictionaries, header)


def encode_chunk(spec: MetricSpec, chunk: RawChunk, header: Mapping[str, Any]) -> bytes:
    """A persisted raw chunk (sketch codes are recomputed on load, not stored)."""
    part, arrays = _pack_chunk(spec, chunk, "")
    return encode({**header, "kind": "raw", **part}, arrays)


def decode_chunk(payload: bytes) -> DecodedChunk:
    header, arrays = decode(payload)
    if header.get("kind") != "raw":
        raise CodecError(f"payload is a {header.get('kind')!r}, not a raw chunk")
    return _unpack_chunk(header, arrays, "", header)


def encode_batch(chunks: Sequence[tuple[MetricSpec, RawChunk]], header: Mapping[str, Any]) -> bytes:
    """Several metrics' events in one payload: one entry of the shared Redis stream."""
    parts = []
    arrays: dict[str, NDArray[Any]] = {}
    for index, (spec, chunk) in enumerate(chunks):
        part, part_arrays = _pack_chunk(spec, chunk, f"{index}/")
        parts.append(part)
        arrays.update(part_arrays)
    return encode({**header, "kind": "batch", "parts": parts}, arrays)


def decode_batch(payload: bytes) -> list[DecodedChunk]:
    header, arrays = decode(payload)
    if header.get("kind") != "batch":
        raise CodecError(f"payload is a {header.get('kind')!r}, not a batch")
    parts = header.pop("parts")
    return [_unpack_chunk(part, arrays, f"{i}/", header) for i, part in enumerate(parts)]


# -- rollup blocks ---------------------------------------------------------------------------


@dataclass(frozen=True)
class DecodedBlock:
    """A rollup block as stored: string dimensions are codes into ``dictionaries`` (its own)."""

    spec: MetricSpec
    block: RollupBlock
    dictionaries: dict[str, list[str]]
    header: dict[str, Any]


def encode_block(
    spec: MetricSpec,
    block: RollupBlock,
    dictionaries: Mapping[str, Sequence[str]],
    header: Mapping[str, Any],
) -> bytes:
    """A persisted rollup block; ``dictionaries`` are those its string dimension codes use."""
    arrays: dict[str, NDArray[Any]] = {"bucket": block.bucket, "count": block.count}
    used = {}
    for name in spec.dimensions:
        column = block.dims[name]
        if spec.by_name[name].kind is Kind.STR:
            column, used[name] = _compact_codes(column, dictionaries[name])
        arrays[f"dim/{name}"] = column
    for name, m in block.measures.items():
        for part in ("sum", "m2", "min", "max", "offsets", "codes", "counts"):
            arrays[f"m/{name}/{part}"] = getattr(m, part)
    meta = {
        "kind": "rollup",
        "metric": spec.name,
        "resolution_us": block.resolution_us,
        "dictionaries": used,
    }
    return encode({**header, **meta}, arrays)


def decode_block(payload: bytes) -> DecodedBlock:
    header, arrays = decode(payload)
    if header.get("kind") != "rollup":
        raise CodecError(f"payload is a {header.get('kind')!r}, not a rollup block")
    try:
        spec = metric_spec(header["metric"])
        measures = {
            name: MeasureRollup(
                *(
                    arrays[f"m/{name}/{part}"]
                    for part in ("sum", "m2", "min", "max", "offsets", "codes", "counts")
                )
            )
            for name in spec.measures
        }
        block = RollupBlock(
            int(header["resolution_us"]),
            arrays["bucket"],
            {name: arrays[f"dim/{name}"] for name in spec.dimensions},
            arrays["count"],
            measures,
        )
    except KeyError as error:
        raise CodecError(f"rollup payload lacks {error}") from error
    dictionaries = {name: list(values) for name, values in header["dictionaries"].items()}
    return DecodedBlock(spec, block, dictionaries, header)
