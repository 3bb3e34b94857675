"""The payload codec: chunks, rollup blocks and batches round-trip; damage is a CodecError."""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from m1lib.metrics import codec
from m1lib.metrics.columns import RawChunk
from m1lib.metrics.schema import METRICS, Kind
from m1lib.metrics.store import EventStore, MetricSnapshot
from tests.m1lib.metrics.factories import MINUTE_US, NOW_S, load, make_events


def snapshot(metric: str, n: int = 3000, seed: int = 9) -> MetricSnapshot:
    store = EventStore(clock=lambda: NOW_S)
    load(store, metric, make_events(metric, n, seed=seed))
    return store.snapshot(metric)


def strings(codes: np.ndarray, values: list[str]) -> list[str | None]:
    return [None if c < 0 else values[c] for c in codes.tolist()]


def rewrite_header(payload: bytes, change: Callable[[dict[str, Any]], None]) -> bytes:
    """``payload`` with its JSON header changed by ``change`` (the body left as it is)."""
    (length,) = struct.unpack_from("<I", payload, 4)
    header = json.loads(payload[8 : 8 + length])
    change(header)
    head = json.dumps(header).encode()
    return payload[:4] + struct.pack("<I", len(head)) + head + payload[8 + length :]


def test_codec_round_trips_chunks_and_blocks_and_rejects_damage() -> None:
    store = EventStore(clock=lambda: NOW_S)
    load(store, "cost_updates", make_events("cost_updates", 3000, seed=9))
    snap = store.snapshot("cost_updates")
    spec = METRICS["cost_updates"]
    chunk = snap.raw[0]
    decoded = codec.decode_chunk(codec.encode_chunk(spec, chunk, {"coverage": {"run": [[1, 2]]}}))
    assert decoded.header["coverage"] == {"run": [[1, 2]]}
    assert np.array_equal(decoded.ts, chunk.ts)
    for name in ("inputTokens", "costUsd"):
        assert np.array_equal(decoded.columns[name], chunk.columns[name])
    models = [decoded.dictionaries["model"][c] for c in decoded.columns["model"]]
    assert models == [snap.dictionaries["model"].values[c] for c in chunk.columns["model"]]
    block = snap.rollups[MINUTE_US][0]
    values = {name: d.values for name, d in snap.dictionaries.items()}
    back = codec.decode_block(codec.encode_block(spec, block, values, {})).block
    assert np.array_equal(back.count, block.count)
    assert np.array_equal(back.measures["costUsd"].codes, block.measures["costUsd"].codes)
    assert np.allclose(back.measures["costUsd"].m2, block.measures["costUsd"].m2)
    payload = codec.encode_chunk(spec, chunk, {})
    for damaged in (b"XXXX" + payload[4:], payload[:-10], payload[:6]):
        with pytest.raises(codec.CodecError):
            codec.decode_chunk(damaged)
    with pytest.raises(codec.CodecError, match="not a rollup block"):
        codec.decode_block(payload)


def test_the_metrics_cover_every_column_kind() -> None:
    kinds = {f.kind for spec in METRICS.values() for f in spec.fields}
    assert kinds == set(Kind)


@pytest.mark.parametrize("metric", sorted(METRICS))
def test_a_raw_chunk_round_trips_every_column_of_every_kind(metric: str) -> None:
    snap = snapshot(metric)
    spec = METRICS[metric]
    for chunk in snap.raw:
        decoded = codec.decode_chunk(codec.encode_chunk(spec, chunk, {"replica": "r1"}))
        assert (decoded.spec, decoded.header["replica"]) == (spec, "r1")
        assert decoded.ts.dtype == np.int64
        assert np.array_equal(decoded.ts, chunk.ts)
        for f in spec.fields:
            got, want = decoded.columns[f.name], chunk.columns[f.name]
            assert got.dtype == want.dtype, f.name
            if f.kind is Kind.STR:
                values = snap.dictionaries[f.name].values
                assert strings(got, decoded.dictionaries[f.name]) == strings(want, values)
            else:
                assert np.array_equal(got, want, equal_nan=f.kind is Kind.FLOAT), f.name


@pytest.mark.parametrize("metric", sorted(METRICS))
def test_a_rollup_block_round_trips_every_dimension_and_measure(metric: str) -> None:
    snap = snapshot(metric)
    spec = METRICS[metric]
    values = {name: d.values for name, d in snap.dictionaries.items()}
    for resolution, blocks in snap.rollups.items():
        for block in blocks:
            decoded = codec.decode_block(codec.encode_block(spec, block, values, {"n": 1}))
            back = decoded.block
            assert (back.resolution_us, decoded.header["n"]) == (resolution, 1)
            assert np.array_equal(back.bucket, block.bucket)
            assert np.array_equal(back.count, block.count)
            for name in spec.dimensions:
                if spec.by_name[name].kind is Kind.STR:
                    got = strings(back.dims[name], decoded.dictionaries[name])
                    assert got == strings(block.dims[name], values[name]), name
                else:
                    assert np.array_equal(back.dims[name], block.dims[name]), name
            for name, measure in block.measures.items():
                for part in ("sum", "m2", "min", "max", "offsets", "codes", "counts"):
                    want = getattr(measure, part)
                    got = getattr(back.measures[name], part)
                    assert got.dtype == want.dtype, (name, part)
                    assert np.array_equal(got, want, equal_nan=True), (name, part)


def test_a_chunk_carries_only_the_strings_it_uses() -> None:
    snap = snapshot("policy_decisions")
    chunk = snap.raw[0].slice(0, 5, copy=True)
    decoded = codec.decode_chunk(codec.encode_chunk(METRICS["policy_decisions"], chunk, {}))
    used = {int(c) for c in chunk.columns["subject"]}
    assert len(decoded.dictionaries["subject"]) == len(used) <= 5
    assert len(snap.dictionaries["subject"]) > 5


def test_a_batch_holds_several_metrics_under_one_header() -> None:
    parts: list[tuple[Any, RawChunk]] = []
    for metric in ("health_checks", "cost_updates"):
        parts.append((METRICS[metric], snapshot(metric, n=200).raw[0]))
    decoded = codec.decode_batch(codec.encode_batch(parts, {"replica": "r2", "seq": 7}))
    assert [d.spec.name for d in decoded] == ["health_checks", "cost_updates"]
    for (spec, chunk), got in zip(parts, decoded, strict=True):
        assert (got.header["replica"], got.header["seq"]) == ("r2", 7)
        assert "parts" not in got.header
        assert np.array_equal(got.ts, chunk.ts)
        for f in spec.fields:
            if f.kind is not Kind.STR:
                assert np.array_equal(got.columns[f.name], chunk.columns[f.name])


def test_a_payload_of_one_kind_is_refused_as_another() -> None:
    spec = METRICS["health_checks"]
    snap = snapshot("health_checks", n=100)
    chunk = codec.encode_chunk(spec, snap.raw[0], {})
    batch = codec.encode_batch([(spec, snap.raw[0])], {})
    values = {name: d.values for name, d in snap.dictionaries.items()}
    block = codec.encode_block(spec, snap.rollups[MINUTE_US][0], values, {})
    with pytest.raises(codec.CodecError, match="not a batch"):
        codec.decode_batch(chunk)
    with pytest.raises(codec.CodecError, match="not a raw chunk"):
        codec.decode_chunk(batch)
    with pytest.raises(codec.CodecError, match="not a raw chunk"):
        codec.decode_chunk(block)
    with pytest.raises(codec.CodecError, match="not a rollup block"):
        codec.decode_block(batch)


def test_every_allowed_dtype_round_trips_with_its_extremes_and_when_empty() -> None:
    arrays = {
        "i8": np.array([np.iinfo(np.int64).min, np.iinfo(np.int64).max, 0, -1, 5], dtype="<i8"),
        "f8": np.array([np.nan, np.inf, -np.inf, -0.0, 1e-300, 2.5], dtype="<f8"),
        "i4": np.array([np.iinfo(np.int32).min, -1, 0, np.iinfo(np.int32).max], dtype="<i4"),
        "i1": np.array([-1, 0, 1, 127, -128], dtype="|i1"),
        "u2": np.array([0, 1, 65535], dtype="<u2"),
    }
    arrays |= {f"empty-{name}": array[:0] for name, array in arrays.items()}
    header, back = codec.decode(codec.encode({"kind": "test", "x": [1, "y"]}, arrays))
    assert header == {"kind": "test", "x": [1, "y"]}
    assert list(back) == list(arrays)
    for name, array in arrays.items():
        assert back[name].dtype == array.dtype, name
        assert back[name].tobytes() == array.tobytes(), name  # bit for bit: nan, -0.0


@pytest.mark.parametrize("dtype", ["<f4", "<u8", "<i2", "|b1", "|O"])
def test_other_dtypes_are_refused_when_writing_and_when_reading(dtype: str) -> None:
    array = np.zeros(3, dtype=dtype)
    with pytest.raises(codec.CodecError, match="has dtype"):
        codec.encode({}, {"a": array})
    payload = codec.encode({}, {"a": np.zeros(3, dtype="<i4")})

    def claim(header: dict[str, Any]) -> None:
        header["arrays"][0]["dtype"] = dtype

    with pytest.raises(codec.CodecError, match="has dtype"):
        codec.decode(rewrite_header(payload, claim))


def test_a_truncated_payload_raises_codec_error_at_every_length() -> None:
    spec = METRICS["error_alerts"]
    payload = codec.encode_chunk(spec, snapshot("error_alerts", n=50).raw[0], {})
    for length in range(len(payload)):
        with pytest.raises(codec.CodecError):
            codec.decode_chunk(payload[:length])


def test_a_corrupt_payload_raises_codec_error() -> None:
    payload = codec.encode({"kind": "raw"}, {"a": np.arange(100, dtype="<i8")})
    (length,) = struct.unpack_from("<I", payload, 4)
    body_at = 8 + length
    for at in range(body_at, len(payload)):
        damaged = bytearray(payload)
        damaged[at] ^= 0xFF
        with pytest.raises(codec.CodecError):
            codec.decode(bytes(damaged))
    with pytest.raises(codec.CodecError, match="damaged"):
        codec.decode(payload[:4] + struct.pack("<I", length) + b"{not json" + payload[body_at:])

    def miscount(header: dict[str, Any]) -> None:
        header["arrays"][0]["n"] = 101

    with pytest.raises(codec.CodecError):
        codec.decode(rewrite_header(payload, miscount))


def test_a_rollup_payload_without_its_arrays_raises_codec_error() -> None:
    payload = codec.encode(
        {"kind": "rollup", "metric": "health_checks", "resolution_us": 1, "dictionaries": {}},
        {"bucket": np.zeros(1, dtype="<i8")},
    )
    with pytest.raises(codec.CodecError, match="rollup payload lacks"):
        codec.decode_block(payload)


def test_the_format_version_is_in_the_magic_and_another_version_is_refused() -> None:
    payload = codec.encode({"kind": "raw"}, {})
    assert payload.startswith(codec.MAGIC)
    assert codec.MAGIC == b"M1C1"  # a change of layout must change the magic
    for other in (b"M1C2", b"M1C0", b"m1c1"):
        with pytest.raises(codec.CodecError, match="bad magic"):
            codec.decode(other + payload[4:])


def _without(metric: str, field: str) -> bytes:
    """A raw chunk payload as a writer that did not know ``field`` yet wrote it."""
    spec = METRICS[metric]
    part, arrays = codec._pack_chunk(spec, snapshot(metric, n=40).raw[0], "")
    del arrays[field]
    part["dictionaries"].pop(field, None)
    return codec.encode({"kind": "raw", **part}, arrays)


def test_a_payload_from_before_error_alerts_had_metadata_reads_it_as_null() -> None:
    decoded = codec.decode_chunk(_without("error_alerts", "metadata"))
    n = decoded.ts.size
    assert n > 0
    assert decoded.columns["metadata"].tolist() == [-1] * n
    assert decoded.dictionaries["metadata"] == []
    store = EventStore(clock=lambda: NOW_S)
    chunk = store.import_coded("error_alerts", decoded.ts, decoded.columns, decoded.dictionaries)
    store.insert("error_alerts", chunk)
    assert (
        sum(t.points for t in store.stats() if t.metric == "error_alerts" and t.resolution == "raw")
        == n
    )


def test_a_payload_without_a_required_column_is_a_codec_error() -> None:
    with pytest.raises(codec.CodecError, match=r"error_alerts\.message"):
        codec.decode_chunk(_without("error_alerts", "message"))
