"""Events recorded outside a replica, without Redis: POSTed to the API with M1_API_KEY; queries
from such a process (and `m1 query`) answered by the API."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib
import uvicorn

from m1lib import auth, cli
from m1lib.api.app import create_app
from m1lib.api.replica import ReplicaRuntime
from m1lib.db import migrate
from m1lib.metrics import MetricsRuntime
from m1lib.metrics.forward import FallbackForwarder, HttpForwarder, ingest_stream
from m1lib.settings import Settings
from tests.m1lib.metrics.test_forward import alerts_from, record_in_another_process, run_outside
from tests.services import OwnRedis, free_port
from tests.waiting import wait_for


@dataclass
class Api:
    runtime: ReplicaRuntime
    server: uvicorn.Server
    thread: threading.Thread
    url: str
    key: str  # role service

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(60)


@pytest.fixture
def serve_api(make_settings: Callable[..., Settings]) -> Iterator[Callable[..., Api]]:
    """An API replica under uvicorn (no Redis) with a service key; ``port`` may be chosen."""
    started: list[Api] = []

    def factory(port: int | None = None, key: str | None = None) -> Api:
        port = port or free_port()
        settings = make_settings(
            jwt={"secret": "s" * 40}, api={"port": port}, events={"flush_ms": 5}
        )
        runtime = ReplicaRuntime.from_settings(settings)
        migrate.upgrade(runtime.db)
        runtime.revocations.load()
        runtime.metrics.start()
        key = key or auth.new_key()
        auth.store_credential(runtime.db, f"svc-{port}", "service", key, created_by="test")
        server = uvicorn.Server(
            uvicorn.Config(create_app(settings, runtime=runtime), port=port, log_level="warning")
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        api = Api(runtime, server, thread, f"http://127.0.0.1:{port}", key)
        started.append(api)
        wait_for(lambda: server.started, "uvicorn to start")
        return api

    yield factory
    for api in started:
        api.stop()
        api.runtime.close()


def test_an_event_recorded_in_another_process_reaches_the_api(
    serve_api: Callable[..., Api], tmp_path: Path
) -> None:
    api = serve_api()
    env = {"M1_API_URL": api.url, "M1_API_KEY": api.key}
    record_in_another_process(env, tmp_path, "posted", 4)  # a short process: sent at its exit
    wait_for(lambda: alerts_from(api.runtime.metrics, "posted"), "4 events", until=lambda n: n == 4)


def test_queries_outside_a_replica_go_to_the_api(
    serve_api: Callable[..., Api], make_settings: Callable[..., Settings]
) -> None:
    api = serve_api()
    api.runtime.metrics.recorder.record_event(
        "error_alerts", level="critical", source="here", message="m"
    )
    assert api.runtime.metrics.flush()
    outside = MetricsRuntime(make_settings(api={"url": api.url, "key": api.key}), forwarding=True)
    outside.start()
    try:
        result = outside.run_query(
            {"metric": "error_alerts", "timeRange": "1h", "groupBy": ["source", "level"]}
        )
    finally:
        outside.close()
    assert result.rows == [{"source": "here", "level": "critical", "count": 1}]
    assert result.kinds["count"] == "int"
    assert result.meta.source in {"raw", "rollup"}


def test_the_api_away_the_outbox_is_bounded_then_delivered(
    serve_api: Callable[..., Api], make_settings: Callable[..., Settings]
) -> None:
    """Nothing listens on the port yet: the sender keeps at most its outbox (the rest dropped
    and counted), and delivers what it kept once the API answers there."""
    port, key = free_port(), auth.new_key()
    settings = make_settings(
        api={"url": f"http://127.0.0.1:{port}", "key": key},
        events={"queue_size": 100, "flush_ms": 5, "forward_interval_ms": 0},
    )
    sender = MetricsRuntime(settings, forwarding=True)
    sender.start()
    try:
        assert isinstance(sender.forwarder, HttpForwarder)
        for i in range(4):
            batch = [{"metric": "error_alerts", "level": "warning", "source": "later",
                      "message": f"{i}"}] * 50  # fmt: skip
            sender.record_events(batch)
            assert sender.recorder.flush()
        wait_for(lambda: sender.drops, "drops", until=lambda d: d.get("forward_unavailable"))
        assert sender.forwarder.queued <= 100  # a batch being sent (the failing try) aside
        api = serve_api(port, key)
        dropped = sender.drops["forward_unavailable"]
        wait_for(lambda: sender.forwarder.pending, "the outbox to empty", until=lambda n: n == 0)  # type: ignore[union-attr]
        assert sender.drops["forward_unavailable"] == dropped
        wait_for(
            lambda: alerts_from(api.runtime.metrics, "later"),
            "what the outbox kept",
            until=lambda n: n == 200 - dropped,
        )
    finally:
        sender.close()


def test_a_refused_key_drops_and_counts(
    serve_api: Callable[..., Api], make_settings: Callable[..., Settings]
) -> None:
    api = serve_api()
    settings = make_settings(api={"url": api.url, "key": "m1_revoked-or-wrong"})
    sender = MetricsRuntime(settings, forwarding=True)
    sender.start()
    try:
        sender.record_event("error_alerts", level="warning", source="x", message="refused")
        wait_for(lambda: sender.drops, "the refusal", until=lambda d: d.get("forward_refused"))
    finally:
        sender.close()
    assert sender.drops == {"forward_refused": 1}


def test_m1_query_prints_the_api_answer(
    serve_api: Callable[..., Api],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    api = serve_api()
    api.runtime.metrics.recorder.record_event(
        "health_checks", component="db", status="degraded", latencyMs=5.0
    )
    assert api.runtime.metrics.flush()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("M1_API_URL", api.url)
    monkeypatch.setenv("M1_API_KEY", api.key)
    assert cli.main(["query", "--template", "unhealthy_components"]) == 0
    answer: Any = json.loads(capsys.readouterr().out)
    assert answer["rows"][0]["component"] == "db"
    query = tmp_path / "q.json"
    query.write_text(json.dumps({"metric": "health_checks", "timeRange": "1h"}))
    assert cli.main(["query", "--file", str(query)]) == 0
    assert json.loads(capsys.readouterr().out)["rows"] == [{"count": 1}]
    assert cli.main(["query", '{"metric": "nope"}']) == 2
    assert "metric" in capsys.readouterr().err
    assert cli.main(["query"]) == 2


def test_an_alert_goes_at_once_whatever_the_interval(
    serve_api: Callable[..., Api], make_settings: Callable[..., Settings]
) -> None:
    api = serve_api()
    settings = make_settings(
        api={"url": api.url, "key": api.key},
        events={"flush_ms": 5, "forward_interval_ms": 60_000},
    )
    sender = MetricsRuntime(settings, forwarding=True)
    sender.start()
    try:
        sender.record_event("error_alerts", level="warning", source="first", message="m")
        wait_for(lambda: alerts_from(api.runtime.metrics, "first"), "the first POST")
        sender.record_event("health_checks", component="db", status="healthy", latencyMs=1.0)
        assert sender.recorder.flush()
        assert sender.forwarder is not None
        assert sender.forwarder.pending == 1  # waits for the interval
        sender.recorder.record_now(
            "error_alerts", None, {"level": "critical", "source": "alert", "message": "now"}
        )
        # far sooner than the 60 s interval: the alert takes the waiting event along
        wait_for(lambda: alerts_from(api.runtime.metrics, "alert"), "the alert", timeout_s=30)
        assert sender.forwarder.pending == 0
    finally:
        sender.close()


def test_m1_demo_forwards_its_cache_traffic_to_the_api(
    serve_api: Callable[..., Api], tmp_path: Path
) -> None:
    """`m1 demo` in its own process: the cache_operations its cached_call records there reach
    the API it was pointed at (with --api/--key, not M1_API_URL/M1_API_KEY), sent at its end."""
    api = serve_api()
    argv = ["demo", "--api", api.url, "--key", api.key, "--duration", "3s", "--agents", "20"]
    done = run_outside(["-m", "m1lib.cli", *argv], {}, tmp_path)
    assert "forwarded to the API" in done.stdout, done.stdout
    metrics = api.runtime.metrics

    def cache_gets() -> int:
        metrics.flush()
        result = metrics.run_query(
            {"metric": "cache_operations", "timeRange": "1h", "groupBy": ["op"]}
        )
        return sum(int(row["count"]) for row in result.rows if row["op"] == "get")

    wait_for(cache_gets, "the demo's cache gets on the API", until=lambda n: n > 0)


def test_with_redis_away_events_go_to_the_api_and_back_to_redis_when_it_returns(
    serve_api: Callable[..., Api], make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    """A flow run with Redis and M1_API_KEY: while Redis is down (the outage its health check
    reports), its events reach the API instead of waiting in the outbox and dying at exit; once
    Redis answers, the ingest stream is used again."""
    api = serve_api()
    redis_server = OwnRedis(tmp_path)  # not started yet: nothing listens on its port
    settings = make_settings(
        redis={"url": redis_server.url, "prefix": "fallback"},
        api={"url": api.url, "key": api.key},
        events={"flush_ms": 5, "forward_interval_ms": 0},
    )
    sender = MetricsRuntime(settings, forwarding=True)
    sender.start()
    try:
        assert isinstance(sender.forwarder, FallbackForwarder)
        for i in range(3):
            sender.record_event("error_alerts", level="warning", source="away", message=f"{i}")
        wait_for(lambda: alerts_from(api.runtime.metrics, "away"), "3 events through the API",
                 until=lambda n: n == 3)  # fmt: skip
        posted = sender.forwarder.fallback_sends
        assert posted >= 1
        redis_server.start()
        client = redis_lib.Redis.from_url(redis_server.url)
        try:
            sender.record_event("error_alerts", level="warning", source="back", message="x")
            stream = ingest_stream(settings)
            wait_for(lambda: client.xlen(stream), "the batch on the ingest stream",
                     until=lambda n: n >= 1)  # fmt: skip
        finally:
            client.close()
        assert sender.forwarder.fallback_sends == posted  # Redis took it: not posted too
        assert alerts_from(api.runtime.metrics, "back") == 0  # no replica reads that stream here
        assert not sender.drops
    finally:
        sender.close()
        redis_server.stop()
