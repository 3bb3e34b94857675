"""m1lib.raise_alert: an error_alerts event with JSON metadata, on the shared stream at once (long
before the next flush), in the store at once without Redis; bad metadata is refused by name."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis as redis_lib

import m1lib
from m1lib.alerts import METADATA_MAX, metadata_text
from m1lib.errors import InputError
from m1lib.metrics import MetricsRuntime, install_default
from m1lib.metrics.codec import DecodedChunk
from m1lib.metrics.stream import StreamConsumer
from m1lib.redis_conn import key, make_redis
from m1lib.settings import Settings
from tests.waiting import wait_for

LONG_FLUSH_MS = 10_000  # the slowest flush settings allow: waiting for it would time out below
WAIT_S = 5.0


@pytest.fixture
def make_default() -> Iterator[Callable[[Settings], MetricsRuntime]]:
    """``make_default(settings)``: a started runtime made this process's default; closed after."""
    made: list[tuple[MetricsRuntime, Any]] = []
    previous = install_default(None)

    def factory(settings: Settings) -> MetricsRuntime:
        client = make_redis(settings)
        runtime = MetricsRuntime(settings, redis_client=client, replica_id="r1")
        made.append((runtime, client))
        runtime.start()
        assert runtime.flush()  # the start-up passes are over: the next is LONG_FLUSH_MS away
        install_default(runtime)
        return runtime

    yield factory
    install_default(previous)
    for runtime, client in made:
        runtime.close()
        if client is not None:
            client.close()


def alerts(metrics: MetricsRuntime) -> list[dict[str, Any]]:
    query = {"metric": "error_alerts", "timeRange": "1h",
             "groupBy": ["level", "source", "message", "metadata"]}  # fmt: skip
    return metrics.run_query(query).rows


def test_an_alert_is_in_the_store_at_once_without_redis(
    make_settings: Callable[..., Settings], make_default: Callable[[Settings], MetricsRuntime]
) -> None:
    metrics = make_default(make_settings(events={"flush_ms": LONG_FLUSH_MS}))
    m1lib.raise_alert("critical", "db", "pool exhausted", metadata={"pool": "main", "size": 20})
    rows = wait_for(lambda: alerts(metrics), "the alert in the store", timeout_s=WAIT_S)
    assert rows == [{"level": "critical", "source": "db", "message": "pool exhausted",
                     "metadata": '{"pool":"main","size":20}', "count": 1}]  # fmt: skip


def test_metadata_may_be_json_text_or_absent(
    make_settings: Callable[..., Settings], make_default: Callable[[Settings], MetricsRuntime]
) -> None:
    metrics = make_default(make_settings())
    m1lib.raise_alert("warning", "cache", "slow", metadata='{ "p99Ms" : 950 }')
    m1lib.raise_alert("warning", "cache", "slower")
    assert metrics.flush()
    assert [(row["message"], row["metadata"]) for row in alerts(metrics)] == [
        ("slow", '{"p99Ms":950}'), ("slower", None)
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("metadata", "problem"),
    [({"k": "x" * METADATA_MAX}, "characters as JSON"), ("[1, 2]", "list is not a JSON object"),
     ("{nope", "is not JSON text"), (5, "int is not a JSON object"),
     ({"k": float("nan")}, "not a finite number"), ({"k": "a\x00b"}, "NUL")],
)  # fmt: skip
def test_bad_metadata_is_an_input_error_naming_it_and_records_nothing(
    make_settings: Callable[..., Settings],
    make_default: Callable[[Settings], MetricsRuntime],
    metadata: Any,
    problem: str,
) -> None:
    metrics = make_default(make_settings())
    with pytest.raises(InputError, match=problem) as caught:
        m1lib.raise_alert("warning", "cache", "slow", metadata=metadata)
    assert caught.value.path.startswith("metadata")
    assert metrics.flush()
    assert alerts(metrics) == []


def test_metadata_at_the_limit_is_kept() -> None:
    padding = METADATA_MAX - len('{"k":""}')
    text = metadata_text({"k": "x" * padding})
    assert text is not None
    assert len(text) == METADATA_MAX
    with pytest.raises(InputError):
        metadata_text({"k": "x" * (padding + 1)})


def test_a_level_that_is_no_level_is_an_input_error(
    make_settings: Callable[..., Settings], make_default: Callable[[Settings], MetricsRuntime]
) -> None:
    make_default(make_settings())
    with pytest.raises(InputError) as caught:
        m1lib.raise_alert("info", "cache", "slow")  # type: ignore[arg-type]
    assert caught.value.path == "error_alerts.level"


@pytest.mark.redis
def test_an_alert_is_published_on_the_shared_stream_at_once_as_its_own_entry(
    make_settings: Callable[..., Settings],
    make_default: Callable[[Settings], MetricsRuntime],
    shared_redis_url: str,
    redis_prefix: str,
) -> None:
    settings = make_settings(
        redis={"url": shared_redis_url, "prefix": redis_prefix},
        events={"flush_ms": LONG_FLUSH_MS},
    )
    make_default(settings)
    m1lib.record_event("health_checks", component="db", status="healthy", latencyMs=1.0)
    m1lib.raise_alert("critical", "redis", "primary lost", metadata={"node": "r2"})

    entries: list[list[DecodedChunk]] = []
    client = redis_lib.Redis.from_url(shared_redis_url)
    consumer = StreamConsumer(
        client,
        key(settings, "events"),
        apply=lambda origin, run, seq, piece, chunks: entries.append(chunks),
        skip=lambda origin, run, seq, piece: False,
    )
    try:
        wait_for(lambda: consumer.read_once(block_ms=100) or entries, "the alert on the stream",
                 timeout_s=WAIT_S)  # fmt: skip
    finally:
        client.close()
    first = entries[0]  # the alert's own batch, ahead of what was queued before it
    assert [chunk.spec.name for chunk in first] == ["error_alerts"]
    (chunk,) = first
    assert chunk.ts.size == 1

    def text(field: str) -> str:
        return chunk.dictionaries[field][int(chunk.columns[field][0])]

    assert (text("level"), text("source"), text("message")) == ("critical", "redis", "primary lost")
    assert json.loads(text("metadata")) == {"node": "r2"}
    assert text("replica") == "r1"
