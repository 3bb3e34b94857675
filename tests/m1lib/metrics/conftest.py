"""Runtimes for tests: built from settings of the test's own, always closed; what they are asked."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from m1lib.db import migrate
from m1lib.db.session import Database
from m1lib.metrics import MetricsRuntime
from m1lib.redis_conn import make_redis
from m1lib.settings import Settings
from tests.m1lib.metrics.factories import HOUR_US, make_events

MakeRuntime = Callable[..., MetricsRuntime]
QUERIES = [
    {"metric": "policy_decisions", "timeRange": "24h", "groupBy": ["toolName", "scope"],
     "filters": [{"field": "allowed", "op": "eq", "value": False}], "aggregations": ["count", "percentiles"]},
    {"metric": "policy_decisions", "timeRange": "3d", "interval": "1h", "groupBy": ["allowed"],
     "aggregations": ["count", "avg", "p95"]},
    {"metric": "policy_decisions", "timeRange": "12h", "groupBy": ["subject"], "aggregations": ["count", "max"]},
]  # fmt: skip


@pytest.fixture
def make_runtime() -> Iterator[MakeRuntime]:
    """``make_runtime(settings, replica_id=..., db=..., redis=True, start=True)``; closed after."""
    built: list[MetricsRuntime] = []
    clients: list[Any] = []

    def factory(settings: Settings, *, replica_id: str, db: Database | None = None, redis: bool = False,
                start: bool = True, **kwargs: Any) -> MetricsRuntime:  # fmt: skip
        client = make_redis(settings) if redis else None
        if client is not None:
            clients.append(client)
        runtime = MetricsRuntime(
            settings, db=db, redis_client=client, replica_id=replica_id, **kwargs
        )
        built.append(runtime)
        if start:
            runtime.start()
        return runtime

    yield factory
    for runtime in built:
        runtime.close()
    for client in clients:
        client.close()


@pytest.fixture
def pg_database(fresh_pg_url: str, make_settings: Callable[..., Settings]) -> Iterator[Database]:
    """An empty, migrated PostgreSQL database of the test's own."""
    db = Database(make_settings(database={"url": fresh_pg_url}))
    migrate.upgrade(db)
    yield db
    db.dispose()


# -- what tests ask runtimes, and how they compare the answers --


def now_us() -> int:
    return time.time_ns() // 1000


def recent_events(n: int, seed: int, *, days: float = 3.0) -> Any:
    end = now_us() - 1_000_000
    return make_events(
        "policy_decisions", n, seed=seed, start_us=end - int(days * 24 * HOUR_US), end_us=end
    )


def answers(runtime: MetricsRuntime) -> list[list[dict[str, Any]]]:
    return [runtime.run_query(q).rows for q in QUERIES]


def assert_same(a: list[list[dict[str, Any]]], b: list[list[dict[str, Any]]]) -> None:
    assert len(a) == len(b)
    for rows_a, rows_b in zip(a, b, strict=True):
        assert len(rows_a) == len(rows_b)
        for x, y in zip(rows_a, rows_b, strict=True):
            assert x == {
                k: pytest.approx(v, rel=1e-9) if isinstance(v, float) else v for k, v in y.items()
            }


def _us(moment: datetime) -> int:
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
