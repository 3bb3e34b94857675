"""GET /api/m1/dashboard/stream: a real uvicorn per replica, read by real clients on sockets.

Periods are shrunk (ticks of 50 ms, heartbeats of 0.3 s) and every wait is a ``wait_for`` on
what a client received or what the hub counts, never a sleep.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from m1lib import auth, raise_alert
from m1lib.api.app import create_app
from m1lib.api.replica import ReplicaRuntime
from m1lib.api.sessions import COOKIE_NAME
from m1lib.api.stream import EVENT_TYPES, StreamHub
from m1lib.api.stream import hub as hub_module
from m1lib.api.stream.figures import SNAPSHOT_TYPES, snapshot_figures
from m1lib.api.stream.hub import StreamClient
from m1lib.api.stream.server import StreamAwareServer
from m1lib.db import migrate
from m1lib.metrics import install_default
from m1lib.metrics.store import EventStore
from m1lib.settings import Settings, StreamSettings
from tests.services import free_port
from tests.waiting import wait_for

PATH = "/api/m1/dashboard/stream"
TICK_MS = 50


# -- a replica under uvicorn, and clients ----------------------------------------------------


@dataclass
class Replica:
    runtime: ReplicaRuntime
    app: FastAPI
    port: int
    server: StreamAwareServer
    thread: threading.Thread
    viewer: str
    admin: str
    agent: str

    def url(self, path: str = PATH) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    @property
    def hub(self) -> StreamHub:
        hub: StreamHub = self.app.state.stream_hub
        return hub

    def record(self, metric: str, **fields: Any) -> None:
        self.runtime.metrics.recorder.record_event(metric, **fields)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(60)


@pytest.fixture
def serve(make_settings: Callable[..., Settings]) -> Iterator[Callable[..., Replica]]:
    """Start an API replica (metrics running; a viewer, an admin and an agent key) on a free port."""
    started: list[Replica] = []

    def factory(*, stream: dict[str, Any] | None = None, **overrides: Any) -> Replica:
        port = free_port()
        settings = make_settings(
            jwt={"secret": "s" * 40},
            api={"port": port},
            stream={"tick_ms": TICK_MS, "heartbeat_s": 0.3, **(stream or {})},
            **overrides,
        )
        runtime = ReplicaRuntime.from_settings(settings)
        migrate.upgrade(runtime.db)
        runtime.revocations.load()
        runtime.metrics.start()
        names = f"{port}"
        viewer = auth.create_credential(runtime.db, f"v{names}", "viewer", created_by="test")
        admin = auth.create_credential(runtime.db, f"a{names}", "admin", created_by="test")
        agent = auth.create_credential(runtime.db, f"g{names}", "agent", created_by="test")
        app = create_app(settings, runtime=runtime)
        server = StreamAwareServer(
            uvicorn.Config(
                app, host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=5
            )
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        replica = Replica(runtime, app, port, server, thread, viewer, admin, agent)
        started.append(replica)
        wait_for(lambda: server.started, "uvicorn to start")
        return replica

    yield factory
    for replica in started:
        replica.stop()
        replica.runtime.close()


@dataclass
class Event:
    kind: str  # an event type, "retry", or "comment"
    id: str | None
    data: Any


@dataclass
class Reader:
    """A stream client reading on a thread of its own; what it received is in ``events``."""

    url: str
    headers: dict[str, str] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    status: int | None = None
    response_headers: httpx.Headers | None = None
    body: bytes = b""
    ended_cleanly: bool = False
    error: Exception | None = None

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._answered = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self._answered.wait(60), "the stream did not answer"

    def _run(self) -> None:
        try:
            with (
                httpx.Client(timeout=httpx.Timeout(30.0)) as client,
                client.stream("GET", self.url, headers=self.headers) as response,
            ):
                self.status = response.status_code
                self.response_headers = response.headers
                if response.status_code != 200:
                    self.body = response.read()
                    return
                self._answered.set()
                self._parse(response.iter_lines())
        except httpx.HTTPError as error:
            self.error = error
        finally:
            self._answered.set()

    def _parse(self, lines: Iterator[str]) -> None:
        fields: dict[str, str] = {}
        for line in lines:
            if self._stop.is_set():
                return
            if line.startswith(":"):
                self.events.append(Event("comment", None, line[1:].strip()))
            elif line:
                name, _, value = line.partition(":")
                fields[name] = value.removeprefix(" ")
            elif "event" in fields:
                self.events.append(
                    Event(fields["event"], fields.get("id"), json.loads(fields["data"]))
                )
                fields = {}
            elif "retry" in fields:
                self.events.append(Event("retry", None, int(fields["retry"])))
                fields = {}
        self.ended_cleanly = True

    def of(self, kind: str) -> list[Event]:
        return [event for event in list(self.events) if event.kind == kind]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(60)
        assert not self._thread.is_alive()

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def reader(replica: Replica, query: str = "", **headers: str) -> Reader:
    return Reader(
        replica.url(PATH + query), {"Authorization": f"Bearer {replica.viewer}", **headers}
    )


def wait_kind(client: Reader, kind: str, count: int = 1, **kwargs: Any) -> list[Event]:
    return wait_for(
        lambda: client.of(kind),
        f"{count} {kind} event(s)",
        until=lambda found: len(found) >= count,
        show=lambda _: [(e.kind, e.id) for e in client.events[-20:]],
        **kwargs,
    )


def alert(replica: Replica, message: str, **extra: Any) -> None:
    replica.record("error_alerts", level="warning", source="test", message=message, **extra)


# -- wire format, selection, figures -----------------------------------------------------------


def test_wire_format_envelopes_ids_and_retry(serve: Callable[..., Replica]) -> None:
    replica = serve()
    with reader(replica) as client:
        assert client.status == 200
        assert client.response_headers is not None
        assert client.response_headers["content-type"].startswith("text/event-stream")
        assert client.response_headers["cache-control"] == "no-cache"
        wait_kind(client, "cost_update", 3)
    first = client.events[0]
    assert (first.kind, first.data) == ("retry", 3000)
    assert client.events[1].kind == "health_status"  # on connect, before the first tick
    assert client.events[1].id is None  # only snapshots and alerts carry ids
    snapshots = [e for e in client.events if e.kind in SNAPSHOT_TYPES]
    for event in snapshots:
        assert set(event.data) == {"type", "timestamp", "data"}
        assert event.data["type"] == event.kind
        assert event.data["timestamp"].endswith("Z")
        assert event.id is not None
        assert int(event.id) % TICK_MS == 0
    by_tick: dict[str, list[str]] = {}
    for event in snapshots:
        by_tick.setdefault(event.id or "", []).append(event.kind)
    complete = [kinds for kinds in by_tick.values() if len(kinds) == len(SNAPSHOT_TYPES)]
    assert complete
    assert all(sorted(k) == sorted(SNAPSHOT_TYPES) for k in complete)
    ticks = [int(tick) for tick in by_tick]
    assert ticks == sorted(ticks)
    assert len(set(ticks)) == len(ticks)
    assert set(client.of("cache_metrics")[0].data["data"]) == {
        "hitRate", "missRate", "totalOps", "latency"
    }  # fmt: skip


def test_types_selects_event_types(serve: Callable[..., Replica]) -> None:
    replica = serve()
    with reader(replica, "?types=cache_metrics,error_alert") as client:
        wait_kind(client, "cache_metrics", 3)
        alert(replica, "selected")
        wait_kind(client, "error_alert")
    kinds = {event.kind for event in client.events}
    assert kinds <= {"retry", "comment", "cache_metrics", "error_alert"}


def test_unknown_type_is_a_400_naming_the_allowed_ones(serve: Callable[..., Replica]) -> None:
    replica = serve()
    answer = httpx.get(
        replica.url(PATH + "?types=cache_metrics,bogus"),
        headers={"Authorization": f"Bearer {replica.viewer}"},
    )
    assert answer.status_code == 400
    assert answer.headers["content-type"].startswith("application/problem+json")
    (error,) = answer.json()["errors"]
    assert error["path"] == "types"
    assert "bogus" in error["problem"]
    assert set(error["allowed"]) == set(EVENT_TYPES)
    assert replica.hub.client_count == 0


def test_snapshot_reflects_recorded_events(serve: Callable[..., Replica]) -> None:
    replica = serve()
    for hit in (True, True, True, False):
        replica.record("cache_operations", cache="tools", op="get", hit=hit, latencyMs=2.0)
    replica.record("cache_operations", cache="tools", op="set", hit=False, latencyMs=4.0)
    for i, ok in enumerate((True, False, True)):
        replica.record("policy_decisions", toolName="web_search", scope="read", allowed=ok,
                       reason="ok" if ok else "revoked", subject="a", checkMs=float(i))  # fmt: skip
    replica.record("tool_executions", toolName="shell", scope="execute", success=False,
                   durationMs=30.0, error="Boom")  # fmt: skip
    for ms in (10.0, 20.0):
        replica.record("tool_executions", toolName="web_search", scope="read", success=True,
                       durationMs=ms)  # fmt: skip
    replica.record("cost_updates", model="m-1", toolName="t", component="c", inputTokens=1,
                   outputTokens=2, costUsd=0.25)  # fmt: skip
    replica.record("cost_updates", model="m-2", toolName="t", component="c", inputTokens=1,
                   outputTokens=2, costUsd=0.5)  # fmt: skip
    with reader(replica) as client:

        def latest(kind: str) -> dict[str, Any]:
            data: dict[str, Any] = wait_for(
                lambda: client.of(kind)[-1].data["data"] if client.of(kind) else None,
                f"a {kind} snapshot over the recorded events",
                until=lambda d: d is not None and d.get("total", d.get("totalOps", 1)) != 0,
            )
            return data

        cache = latest("cache_metrics")
        policy = latest("policy_decisions")
        tools = latest("tool_executions")
        costs = wait_for(
            lambda: client.of("cost_update")[-1].data["data"] if client.of("cost_update") else {},
            "the costs",
            until=lambda d: d.get("totalCost") == 0.75,
        )
    assert cache["totalOps"] == 5
    assert (cache["hitRate"], cache["missRate"]) == (0.75, 0.25)
    assert cache["latency"]["p50"] == 2.0
    assert cache["latency"]["p99"] > 2.0
    assert (policy["allowed"], policy["denied"], policy["avgCheckTime"]) == (2, 1, 1.0)
    assert policy["lastDecisions"][0] == {"toolName": "web_search", "allowed": True, "reason": "ok"}
    assert len(policy["lastDecisions"]) == 3
    assert (tools["total"], tools["successful"], tools["failed"]) == (3, 2, 1)
    assert tools["topTools"][0] == {"name": "web_search", "count": 2, "avgDuration": 15.0}
    assert costs["costByModel"] == {"m-1": 0.25, "m-2": 0.5}
    assert costs["costTrend"] is None  # nothing in the window before


def test_health_status_from_health_check_events(serve: Callable[..., Replica]) -> None:
    replica = serve()
    with reader(replica, "?types=health_status") as client:
        ready = wait_kind(client, "health_status")[0].data["data"]
        assert ready["status"] == "healthy"  # no health check yet: readiness
        assert "database" in ready["components"]
        replica.record("health_checks", component="redis", status="healthy", latencyMs=1.0)
        replica.record("health_checks", component="database", status="degraded", latencyMs=9.0)
        changed = wait_for(
            lambda: client.of("health_status")[-1].data["data"],
            "health from the health_checks events",
            until=lambda d: d["status"] == "degraded",
        )
        assert changed["components"] == {
            "redis": {"status": "healthy", "latencyMs": 1.0},
            "database": {"status": "degraded", "latencyMs": 9.0},
        }
        # the same statuses again is no change: no new health_status
        sent = len(client.of("health_status"))
        replica.record("health_checks", component="redis", status="healthy", latencyMs=2.0)
        ticks = replica.hub.ticks
        wait_for(lambda: replica.hub.ticks, "more ticks", until=lambda t: t >= ticks + 5)
        assert len(client.of("health_status")) == sent


# -- alerts, resume and reset ----------------------------------------------------------------


def test_recorded_alert_reaches_the_client(serve: Callable[..., Replica]) -> None:
    replica = serve()
    with reader(replica, "?types=error_alert") as client:
        alert(replica, "disk almost full")
        (event,) = wait_kind(client, "error_alert")
    assert event.data["data"] == {
        "level": "warning", "message": "disk almost full", "source": "test", "metadata": {}
    }  # fmt: skip
    stamp, _, digest = (event.id or "").partition("-")
    assert stamp.isdigit()
    assert digest.isalnum()


def test_an_alert_is_pushed_on_the_stores_notice_not_at_a_tick_or_poll(
    serve: Callable[..., Replica], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ticks a minute apart and no polling: only the store's notice can bring the alert."""
    monkeypatch.setattr(hub_module, "ALERT_POLL_S", 3600.0)
    replica = serve(stream={"tick_ms": 60_000})
    with reader(replica, "?types=error_alert") as client:
        alert(replica, "told at once")
        (event,) = wait_kind(client, "error_alert", timeout_s=30)
    assert event.data["data"]["message"] == "told at once"
    assert replica.hub.ticks <= 1


def test_last_event_id_replays_missed_alerts(serve: Callable[..., Replica]) -> None:
    replica = serve()
    with reader(replica, "?types=error_alert") as client:
        alert(replica, "seen")
        (seen,) = wait_kind(client, "error_alert")
    assert seen.id is not None
    alert(replica, "missed 1")
    wait_for(lambda: len(replica.hub.buffered()), "the hub to buffer it", until=lambda n: n == 2)
    alert(replica, "missed 2")
    wait_for(lambda: len(replica.hub.buffered()), "the hub to buffer it", until=lambda n: n == 3)
    with reader(replica, "?types=error_alert", **{"Last-Event-ID": seen.id}) as client:
        replayed = wait_kind(client, "error_alert", 2)
        assert [e.data["data"]["message"] for e in replayed] == ["missed 1", "missed 2"]
        alert(replica, "live")
        wait_kind(client, "error_alert", 3)
    assert not client.of("reset")
    ids = [e.id for e in client.of("error_alert")]
    assert len(set(ids)) == 3
    assert seen.id not in ids


def test_last_event_id_in_the_query_replays_for_a_client_that_cannot_send_the_header(
    serve: Callable[..., Replica],
) -> None:
    """A page's own reconnect opens a new EventSource, which sends no Last-Event-ID header."""
    replica = serve()
    with reader(replica, "?types=error_alert") as client:
        alert(replica, "seen")
        (seen,) = wait_kind(client, "error_alert")
    assert seen.id is not None
    alert(replica, "missed")
    wait_for(lambda: len(replica.hub.buffered()), "the hub to buffer it", until=lambda n: n == 2)
    with reader(replica, f"?types=error_alert&lastEventId={seen.id}") as client:
        (replayed,) = wait_kind(client, "error_alert")
    assert replayed.data["data"]["message"] == "missed"


def test_snapshot_id_as_last_event_id_replays_the_alerts_after_that_tick(
    serve: Callable[..., Replica],
) -> None:
    replica = serve()
    with reader(replica, "?types=cache_metrics") as client:
        (tick,) = wait_kind(client, "cache_metrics")[-1:]
    alert(replica, "after the tick")
    wait_for(lambda: len(replica.hub.buffered()), "the hub to buffer it", until=lambda n: n == 1)
    with reader(replica, **{"Last-Event-ID": tick.id or ""}) as client:
        (event,) = wait_kind(client, "error_alert")
    assert event.data["data"]["message"] == "after the tick"


def test_too_old_or_foreign_last_event_id_gets_reset(serve: Callable[..., Replica]) -> None:
    replica = serve(stream={"alert_buffer": 2})
    with reader(replica, "?types=error_alert") as client:
        for i in range(4):
            alert(replica, f"alert {i}")
        events = wait_kind(client, "error_alert", 4)
    assert [e.data["data"]["message"] for e in events] == [f"alert {i}" for i in range(4)]
    assert len(replica.hub.buffered()) == 2
    for stale in (events[0].id, "1000-abc", "not-an id", "12"):
        with reader(replica, "?types=error_alert", **{"Last-Event-ID": stale or ""}) as client:
            (reset,) = wait_kind(client, "reset")
            assert reset.data["data"]["reason"]
            assert reset.id is None
        assert not client.of("error_alert")  # nothing replayed over a gap
    # the newest evicted alert's own id is the floor: what came after it is all there
    with reader(replica, "?types=error_alert", **{"Last-Event-ID": events[1].id or ""}) as client:
        replayed = wait_kind(client, "error_alert", 2)
    assert [e.data["data"]["message"] for e in replayed] == ["alert 2", "alert 3"]
    assert not client.of("reset")


# -- heartbeat, auth, limits -----------------------------------------------------------------


def test_heartbeat_comment(serve: Callable[..., Replica]) -> None:
    replica = serve(stream={"heartbeat_s": 0.2})
    with reader(replica, "?types=error_alert") as client:  # nothing else would be sent
        beats = wait_kind(client, "comment", 2)
    assert {beat.data for beat in beats} == {"heartbeat"}


def test_heartbeat_keeps_its_period_when_ticks_and_polls_are_far_apart(
    serve: Callable[..., Replica], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The heartbeat is how a proxy keeps the connection and how the server notices a client that
    left: it must not wait for the next tick or alert poll (it used to, up to a whole tick)."""
    monkeypatch.setattr(hub_module, "ALERT_POLL_S", 3600.0)
    replica = serve(stream={"tick_ms": 60_000, "heartbeat_s": 0.2})
    with reader(replica, "?types=error_alert") as client:
        beats = wait_kind(client, "comment", 3, timeout_s=20)
    assert {beat.data for beat in beats} == {"heartbeat"}


def test_stream_needs_a_viewer_credential_401_403(serve: Callable[..., Replica]) -> None:
    replica = serve()
    for headers in ({}, {"Authorization": "Bearer m1_unknown"}, {"Authorization": "Basic x"}):
        answer = httpx.get(replica.url(), headers=headers)
        assert answer.status_code == 401, answer.text
        assert answer.headers["content-type"].startswith("application/problem+json")
    answer = httpx.get(replica.url(), headers={"Authorization": f"Bearer {replica.agent}"})
    assert answer.status_code == 403, answer.text  # an agent records events; it watches nothing
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert replica.hub.client_count == 0
    with Reader(replica.url(), {"Authorization": f"Bearer {replica.admin}"}) as client:
        assert client.status == 200  # admin includes viewer


def test_session_cookie_opens_the_stream(serve: Callable[..., Replica]) -> None:
    replica = serve()
    login = httpx.post(replica.url("/api/m1/session"), json={"key": replica.viewer})
    assert login.status_code == 200, login.text
    cookie = login.cookies[COOKIE_NAME]
    with Reader(replica.url(), {"Cookie": f"{COOKIE_NAME}={cookie}"}) as client:
        assert client.status == 200
        wait_kind(client, "cache_metrics")


def test_client_limit_answers_503_with_retry_after(serve: Callable[..., Replica]) -> None:
    replica = serve(stream={"max_clients": 1})
    with reader(replica) as first:
        assert first.status == 200
        answer = httpx.get(replica.url(), headers={"Authorization": f"Bearer {replica.viewer}"})
        assert answer.status_code == 503
        assert int(answer.headers["Retry-After"]) > 0
        assert answer.headers["content-type"].startswith("application/problem+json")
        assert "M1_STREAM_MAX_CLIENTS" in answer.json()["detail"]
    wait_for(lambda: replica.hub.client_count, "the first client to leave", until=lambda n: n == 0)
    with reader(replica) as again:
        assert again.status == 200


def _stream_clients_gauge(replica: Replica) -> float:
    text = httpx.get(
        replica.url("/metrics"), headers={"Authorization": f"Bearer {replica.viewer}"}
    ).text
    for family in text_string_to_metric_families(text):
        if family.name == "m1_stream_clients":
            return float(family.samples[0].value)
    raise AssertionError("no m1_stream_clients in /metrics")


def test_disconnect_frees_the_client_at_once(serve: Callable[..., Replica]) -> None:
    replica = serve()
    client = reader(replica)
    wait_kind(client, "cache_metrics")
    assert replica.hub.client_count == 1
    assert _stream_clients_gauge(replica) == 1
    client.close()
    wait_for(lambda: replica.hub.client_count, "the client to be freed", until=lambda n: n == 0)
    assert _stream_clients_gauge(replica) == 0
    assert replica.hub.dropped_clients == 0  # it left; nobody dropped it


def _stalled_client(replica: Replica) -> socket.socket:
    """A client that sends its request and never reads a byte (tiny receive buffer)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", replica.port))
    sock.sendall(
        f"GET {PATH} HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {replica.viewer}\r\n"
        "Accept: text/event-stream\r\n\r\n".encode()
    )
    return sock


def test_a_client_that_stops_reading_is_dropped_while_another_keeps_receiving(
    serve: Callable[..., Replica],
) -> None:
    replica = serve(stream={"client_queue": 4})
    # big snapshots (ten decisions with long reasons) fill the stalled socket's buffers quickly
    for i in range(10):
        replica.record("policy_decisions", toolName="t" * 500, scope="read", allowed=False,
                       reason=f"{i}" + "r" * 1999, subject="a", checkMs=1.0)  # fmt: skip
    with reader(replica, "?types=policy_decisions,error_alert") as healthy:
        stalled = _stalled_client(replica)
        try:
            wait_for(lambda: replica.hub.client_count, "both clients", until=lambda n: n == 2)
            wait_for(lambda: replica.hub.dropped_clients, "the stalled client to be dropped",
                     until=lambda n: n == 1, timeout_s=120)  # fmt: skip
            assert replica.hub.client_count == 1
            seen = len(healthy.of("policy_decisions"))
            wait_kind(healthy, "policy_decisions", seen + 5)  # the other one goes on
            alert(replica, "still here")
            wait_kind(healthy, "error_alert")
        finally:
            stalled.close()
    assert healthy.error is None


def test_hub_drops_a_full_queue_without_waiting() -> None:
    async def scenario() -> tuple[int, int, bool]:
        hub = StreamHub(StreamSettings(tick_ms=50, client_queue=2), store=EventStore())
        await hub.start()
        try:
            stalled = hub.connect(frozenset(EVENT_TYPES), None)  # holds the opening message
            reading = hub.connect(frozenset(EVENT_TYPES), None)
            received = 0
            while hub.ticks < 4:  # this one reads; the other never does
                assert await asyncio.wait_for(reading.take(), 30) is not None
                received += 1
            return (
                hub.dropped_clients,
                received,
                stalled.gone and stalled not in hub.clients,
            )
        finally:
            await hub.close()

    dropped, received, gone = asyncio.run(scenario())
    assert (dropped, gone) == (1, True)
    assert received >= 4


def test_stream_client_mailbox_joins_bounds_and_wakes_on_close() -> None:
    async def scenario() -> None:
        closed: list[str] = []
        client = StreamClient(frozenset(EVENT_TYPES), limit=2)
        client.on_close = lambda: closed.append(client.reason)
        assert client.offer(b"a")
        assert client.offer(b"b")
        assert await client.take() == b"ab"  # what waited goes out as one send
        waiting = asyncio.ensure_future(client.take())
        await asyncio.sleep(0)
        assert not waiting.done()
        client.offer(b"c")
        assert await waiting == b"c"
        assert client.offer(b"d")
        assert client.offer(b"e")
        assert not client.offer(b"f")  # full: closed as slow, told once
        assert (client.gone, client.reason, closed) == (True, "slow", ["slow"])
        assert await client.take() is None  # nothing is sent after closing
        assert not client.offer(b"g")
        other = StreamClient(frozenset(), 1)
        parked = asyncio.ensure_future(other.take())
        await asyncio.sleep(0)
        other.close("shutdown")
        assert await parked is None  # a waiting pump wakes and ends

    asyncio.run(scenario())


def test_hub_close_ends_streams_cleanly(serve: Callable[..., Replica]) -> None:
    replica = serve()
    client = reader(replica)
    wait_kind(client, "cache_metrics")
    task = replica.hub._task
    assert task is not None
    asyncio.run_coroutine_threadsafe(replica.hub.close(), task.get_loop()).result(30)
    wait_for(lambda: client.ended_cleanly, "the stream to end with its last chunk")
    assert client.error is None
    answer = httpx.get(replica.url(), headers={"Authorization": f"Bearer {replica.viewer}"})
    assert answer.status_code == 503  # closing: no new streams
    client.close()


def test_server_exit_signal_ends_streams_cleanly_and_at_once(
    serve: Callable[..., Replica],
) -> None:
    replica = serve()
    client = reader(replica)
    wait_kind(client, "cache_metrics")
    # uvicorn alone would wait for the endless response (5 s here), then cut it mid-body
    replica.server.handle_exit(signal.SIGTERM, None)
    wait_for(lambda: client.ended_cleanly, "the stream to end with its last chunk", timeout_s=4)
    assert client.error is None
    replica.thread.join(4)
    assert not replica.thread.is_alive()
    client.close()


# -- two replicas on one Redis and database ----------------------------------------------------


def test_two_replicas_agree_on_ids_and_snapshots(
    serve: Callable[..., Replica], pg_url: str, shared_redis_url: str, redis_prefix: str
) -> None:
    shared = {
        "database": {"url": pg_url},
        "redis": {"url": shared_redis_url, "prefix": redis_prefix},
    }
    one = serve(replica={"id": "one"}, **shared)
    two = serve(replica={"id": "two"}, **shared)
    with reader(one) as on_one, reader(two) as on_two:
        for hit in (True, False, True):
            one.record("cache_operations", cache="c", op="get", hit=hit, latencyMs=1.0)
        assert one.runtime.metrics.flush(30)

        def agreed() -> dict[str, Any]:
            a = {e.id: e.data for e in on_one.of("cache_metrics")}
            b = {e.id: e.data for e in on_two.of("cache_metrics")}
            return {
                tick: a[tick]
                for tick in set(a) & set(b)
                if a[tick] == b[tick] and a[tick]["data"]["totalOps"] == 3
            }

        wait_for(agreed, "the same snapshot under the same id on both replicas")
        # an alert raised on one replica reaches a client of the other, under the same id
        alert(one, "from one")
        (there,) = wait_kind(on_two, "error_alert")
        (here,) = wait_kind(on_one, "error_alert")
        assert there.id == here.id
        assert there.data == here.data
        wait_for(lambda: on_two.of("cost_update"), "snapshots on two after the alert")
    # the client moves from two to one while another alert is raised on two
    alert(two, "while moving")
    wait_for(lambda: len(one.hub.buffered()), "one to hold both alerts", until=lambda n: n == 2)
    with reader(one, "?types=error_alert", **{"Last-Event-ID": there.id or ""}) as moved:
        (replayed,) = wait_kind(moved, "error_alert")
    assert replayed.data["data"]["message"] == "while moving"


def test_head_answers_with_the_stream_headers_and_frees_the_client(
    serve: Callable[..., Replica],
) -> None:
    replica = serve()
    answer = httpx.head(replica.url(), headers={"Authorization": f"Bearer {replica.viewer}"})
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/event-stream")
    assert answer.content == b""
    wait_for(
        lambda: replica.hub.client_count, "the HEAD client to be freed", until=lambda n: n == 0
    )


def test_overlong_last_event_id_is_a_422(serve: Callable[..., Replica]) -> None:
    replica = serve()
    answer = httpx.get(
        replica.url(),
        headers={"Authorization": f"Bearer {replica.viewer}", "Last-Event-ID": "1" * 300},
    )
    assert answer.status_code == 422
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert replica.hub.client_count == 0


def test_a_burst_of_alerts_does_not_drop_a_reading_client(serve: Callable[..., Replica]) -> None:
    replica = serve(stream={"client_queue": 4})
    with reader(replica, "?types=error_alert") as client:
        for i in range(20):
            alert(replica, f"burst {i}")
        received = wait_kind(client, "error_alert", 20)
    assert sorted(e.data["data"]["message"] for e in received) == sorted(
        f"burst {i}" for i in range(20)
    )
    assert replica.hub.dropped_clients == 0


def test_raise_alert_reaches_the_client_with_its_metadata(serve: Callable[..., Replica]) -> None:
    replica = serve()
    install_default(replica.runtime.metrics)  # what a started replica does for its process
    try:
        with reader(replica, "?types=error_alert") as client:
            raise_alert("critical", "cache", "redis down", metadata={"attempts": 3})
            (event,) = wait_kind(client, "error_alert")
    finally:
        install_default(None)
    assert event.data["data"] == {
        "level": "critical", "message": "redis down", "source": "cache",
        "metadata": {"attempts": 3},
    }  # fmt: skip


def test_figures_cost_trend_and_tools_without_a_name() -> None:
    store = EventStore()
    end_us = 1_800_000_000 * 1_000_000
    window_us = 60_000_000

    def costs(at_us: int, usd: float) -> None:
        store.append("cost_updates", [at_us], {"model": ["m"], "toolName": ["t"],
                     "component": ["c"], "inputTokens": [1], "outputTokens": [1],
                     "costUsd": [usd], "replica": ["r"]})  # fmt: skip

    costs(end_us - window_us - 1, 0.5)  # the window before
    costs(end_us - 1, 1.0)  # this window
    costs(end_us, 9.0)  # the next tick's: not in this snapshot
    store.append("cache_operations", [end_us - 10, end_us - 5], {"cache": ["c", "c"],
                 "toolName": [None, "t"], "op": ["set", "evict"], "hit": [False, False],
                 "latencyMs": [1.0, 3.0], "replica": ["r", "r"]})  # fmt: skip
    figures = snapshot_figures(store, end_us, window_us)
    assert figures["cost_update"] == {
        "totalCost": 1.0, "costByModel": {"m": 1.0}, "costTrend": 100.0
    }  # fmt: skip
    cache = figures["cache_metrics"]
    assert (cache["totalOps"], cache["hitRate"], cache["missRate"]) == (2, 0.0, 0.0)  # no get
    assert figures["tool_executions"] == {"total": 0, "successful": 0, "failed": 0, "topTools": []}
