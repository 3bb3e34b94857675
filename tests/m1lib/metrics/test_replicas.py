"""Replicas sharing real Redis and PostgreSQL: same answers everywhere, nothing counted twice."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd
import pytest

from m1lib.db.session import Database
from m1lib.metrics import RELATIVE_ERROR
from m1lib.redis_conn import key, make_redis
from m1lib.settings import Settings
from tests.m1lib.metrics.conftest import QUERIES, MakeRuntime, _us, assert_same, recent_events
from tests.m1lib.metrics.factories import as_records
from tests.m1lib.metrics.oracle import assert_matches, oracle

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


@pytest.fixture
def shared_settings(make_settings: Callable[..., Settings], pg_database: Database, shared_redis_url: str,
                    redis_prefix: str) -> Settings:  # fmt: skip
    return make_settings(
        database={"url": pg_database.engine.url.render_as_string(False)},
        redis={"url": shared_redis_url, "prefix": redis_prefix},
        events={"persist_s": 3600, "flush_ms": 5},
    )


def everything(runtime: Any) -> list[list[dict[str, Any]]]:
    return [runtime.run_query(q).rows for q in QUERIES]


BY_REPLICA = {"metric": "policy_decisions", "timeRange": "24h", "groupBy": ["replica"],
              "aggregations": ["count", "p50"]}  # fmt: skip


def total(runtime: Any) -> int:
    return int(
        runtime.run_query({"metric": "policy_decisions", "timeRange": "7d"}).rows[0]["count"]
    )


def check_against_pandas(runtime: Any, frame: pd.DataFrame) -> None:
    for query in [*QUERIES, BY_REPLICA]:
        result = runtime.run_query(query)
        expected = oracle(frame, query, _us(result.meta.range_from), _us(result.meta.range_to))
        assert_matches(result.rows, expected, query, relative_error=RELATIVE_ERROR)


def test_two_replicas_answer_the_same_with_no_double_counting(
    shared_settings: Settings, make_runtime: MakeRuntime, pg_database: Database
) -> None:
    a = make_runtime(shared_settings, replica_id="api-a", db=pg_database, redis=True)
    b = make_runtime(shared_settings, replica_id="api-b", db=pg_database, redis=True)
    events_a = recent_events(1500, seed=11).assign(replica="api-a")
    events_b = recent_events(900, seed=12).assign(replica="api-b")
    a.record_events(as_records("policy_decisions", events_a))
    b.record_events(as_records("policy_decisions", events_b))
    assert a.flush()
    assert b.flush()
    assert a.sync()
    assert b.sync()
    assert a.publisher is not None
    assert a.publisher.unpublished_events == 0
    assert total(a) == total(b) == 2400
    assert_same(everything(a), everything(b))
    check_against_pandas(b, pd.concat([events_a, events_b]))
    assert a.consumer is not None
    assert a.consumer.skipped_entries >= 1  # its own entries


def test_a_restarted_replica_rebuilds_from_chunks_and_the_stream_without_double_counting(
    shared_settings: Settings, make_runtime: MakeRuntime, pg_database: Database
) -> None:
    a = make_runtime(shared_settings, replica_id="api-a", db=pg_database, redis=True)
    b = make_runtime(shared_settings, replica_id="api-b", db=pg_database, redis=True)
    frame = recent_events(2000, seed=21)
    records = as_records("policy_decisions", frame)
    a.record_events(records[:800])  # persisted below: these come back from metric_chunks
    assert a.flush()
    assert a.persist() == 800
    a.record_events(records[800:1400])  # only on the stream when `a` dies
    b.record_events(records[1400:])  # b's, never persisted: from the stream too
    assert a.flush()
    assert b.flush()
    a.db = None  # a crash: nothing more is persisted
    a.close()
    assert b.sync()
    restarted = make_runtime(shared_settings, replica_id="api-a", db=pg_database, redis=True)
    assert restarted.loaded_chunks == 3
    assert restarted.sync()
    expected = frame.assign(replica=["api-a"] * 1400 + ["api-b"] * 600)
    assert total(restarted) == total(b) == 2000
    assert_same(everything(restarted), everything(b))
    check_against_pandas(restarted, expected)


def test_the_stream_is_capped(shared_settings: Settings, make_runtime: MakeRuntime) -> None:
    settings = shared_settings.model_copy(update={"events": shared_settings.events.model_copy(
        update={"stream_maxlen": 100})})  # fmt: skip
    a = make_runtime(settings, replica_id="api-cap", redis=True)
    for _ in range(400):
        a.record_event("error_alerts", level="warning", source="s", message="m")
        a.recorder.ingest_pending()  # one batch, one stream entry each
    assert a.flush()
    client = make_redis(settings)
    assert client is not None
    try:
        assert client.xlen(key(settings, "events")) < 400
    finally:
        client.close()
