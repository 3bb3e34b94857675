"""``m1 demo``: paced under the rate limits, realistic events, tokens over HTTP, against a real
replica (in process, driven in simulated time: the demo's clock is the replica limiter's clock)."""

from __future__ import annotations

import argparse
import io
import random
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from m1lib import auth, cli, demo, process_cache
from m1lib.cache import Cache
from m1lib.client import ApiClient
from m1lib.metrics import MetricsRuntime
from m1lib.ratelimit import RateLimiter
from m1lib.settings import RatelimitSettings, Settings
from m1lib.vocabulary import Reason
from tests.m1lib.api.conftest import make_client  # noqa: F401 - the replica fixture, reused

TOOLS = [("web_search", "read"), ("log_agent_run", "write"), ("request_approval", "execute")]


class FakeTime:
    """One simulated clock for the demo's loop, its waits and the replica's rate limiter."""

    def __init__(self) -> None:
        self.now = 6_000_000.0  # the start of a rate-limit window

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def local_cache(make_settings: Callable[..., Settings], metrics: MetricsRuntime) -> Iterator[Cache]:
    """The process cache behind ``cached_call``: in memory, recording into ``metrics``."""
    cache = Cache.from_settings(make_settings(), recorder=process_cache._record)
    previous = process_cache.install_cache(cache)
    yield cache
    process_cache.install_cache(previous)
    cache.close()


class Replica:
    """A started replica (the ingest thread running) on simulated time, a key of each role."""

    def __init__(self, client: TestClient, clock: FakeTime) -> None:
        self.client = client
        self.runtime = client.app.state.runtime  # type: ignore[attr-defined]
        self.runtime.limiter = RateLimiter(self.runtime.settings, redis_client=None, clock=clock)
        self.runtime.metrics.start()
        self.keys = {
            role: auth.create_credential(self.runtime.db, f"demo-{role}", role, created_by="test")
            for role in ("viewer", "agent", "admin")
        }

    def api(self, role: str, clock: FakeTime) -> ApiClient:
        return ApiClient(
            "http://testserver",
            self.keys[role],
            max_wait_s=65.0,
            transport=self.client._transport,
            sleep=clock.sleep,
        )

    def count(self, metric: str, group: str | None = None) -> dict[Any, int]:
        assert self.runtime.metrics.flush()
        query: dict[str, Any] = {"metric": metric, "timeRange": "24h", "aggregations": ["count"]}
        if group:
            query["groupBy"] = [group]
        rows = self.runtime.metrics.run_query(query).rows
        return {row.get(group) if group else None: int(row["count"]) for row in rows}


@pytest.fixture
def clock() -> FakeTime:
    return FakeTime()


@pytest.fixture
def make_replica(
    make_client: Callable[..., TestClient],  # noqa: F811 - the fixture imported above
    clock: FakeTime,
) -> Callable[..., Replica]:
    return lambda **overrides: Replica(make_client(jwt={"secret": "s" * 40}, **overrides), clock)


def run_demo(
    replica: Replica, clock: FakeTime, role: str = "admin", *, seconds: float = 90, agents: int = 4
) -> demo.Summary:
    client = replica.api(role, clock)
    access = demo.connect(client, demo.local_tools(replica.runtime.settings))
    waits = demo._Waits()
    client._sleep = waits  # ApiClient's Retry-After waits counted, on the simulated clock
    runner = demo.Demo(
        client,
        access,
        agents=agents,
        duration_s=seconds,
        pace=demo.Pace.for_limits(RatelimitSettings()),
        waits=waits,
        rng=random.Random(7),
        clock=clock,
        sleep=clock.sleep,
        out=io.StringIO(),
    )
    return runner.run()


# -- pacing ------------------------------------------------------------------------------------


@pytest.mark.parametrize("agents", [1, demo.MAX_AGENTS])
def test_planned_requests_stay_under_every_default_limit(agents: int) -> None:
    limits = RatelimitSettings()
    planned = demo.Pace.for_limits(limits).per_minute()
    startup = 1  # one probe per class at start
    assert planned["ingest"] + startup <= limits.ingest_per_min * demo.DEMO_SHARE + startup
    assert planned["ingest"] <= 60 / demo.MIN_BATCH_S  # one batch per interval, whatever the agents
    assert planned["admin"] + startup < limits.admin_per_min
    assert planned["query"] + startup < limits.query_per_min * 0.75  # room for the query box
    bound = demo.batch_events_bound(agents)
    assert bound <= demo.MAX_BATCH_EVENTS <= Settings(_env_file=None).events.ingest_max_events
    assert bound >= agents * demo.CALLS_PER_AGENT_S * demo.MIN_BATCH_S  # a batch holds its calls


def test_pace_follows_configured_limits() -> None:
    tight = demo.Pace.for_limits(RatelimitSettings(ingest_per_min=30, admin_per_min=6))
    assert tight.per_minute()["ingest"] <= 30 * demo.DEMO_SHARE
    assert tight.per_minute()["admin"] <= 6 * demo.DEMO_SHARE


# -- the workload ------------------------------------------------------------------------------


def test_workload_events_are_valid_and_shaped_like_traffic(
    metrics: MetricsRuntime, local_cache: Cache
) -> None:
    workload = demo.Workload(TOOLS, 20, random.Random(3), cached_call=process_cache.cached_call)
    events = workload.calls(3000) + workload.alerts(15.0)
    metrics.record_events(events)  # every event validates against the schema, or this raises
    decisions = [e for e in events if e["metric"] == "policy_decisions"]
    runs = [e for e in events if e["metric"] == "tool_executions"]
    denied = {e["reason"] for e in decisions if not e["allowed"]}
    assert denied == set(demo.DENIAL_REASONS)  # every reason appears
    assert 0.02 < len([e for e in decisions if not e["allowed"]]) / len(decisions) < 0.15
    failures = [e for e in runs if not e["success"]]
    assert 0.04 < len(failures) / len(runs) < 0.12
    assert {e["error"] for e in failures} <= {name for name, _ in demo.FAILURES}
    durations = sorted(e["durationMs"] for e in runs if e["toolName"] == "log_agent_run")
    assert durations[len(durations) * 99 // 100] > 3 * durations[len(durations) // 2]  # a tail
    costs = [e for e in events if e["metric"] == "cost_updates"]
    assert {e["model"] for e in costs} == set(demo.MODELS)
    assert all(e["costUsd"] > 0 for e in costs)
    assert 0.6 < workload.cache_hits / workload.cache_gets < 0.8
    assert metrics.flush()
    query = {"metric": "cache_operations", "timeRange": "1h", "groupBy": ["op", "hit"],
             "aggregations": ["count"]}  # fmt: skip
    counts = {(r["op"], r["hit"]): r["count"] for r in metrics.run_query(query).rows}
    assert counts[("get", True)] == workload.cache_hits  # recorded by cached_call itself


def test_a_degraded_tool_now_and_then_raises_alerts() -> None:
    workload = demo.Workload(TOOLS, 20, random.Random(5))
    alerts = []
    for _ in range(40):  # 40 windows of 15 s at 10 calls a second
        workload.calls(150)
        alerts += workload.alerts(15.0)
    assert {alert["level"] for alert in alerts} == {"warning", "critical"}
    assert len(alerts) < 30  # an event, not every window


def test_revoked_tokens_show_as_revoked_decisions() -> None:
    workload = demo.Workload(TOOLS, 1, random.Random(1))
    agent, tool = workload.agents[0], workload.tools[0]
    workload.held[(agent, tool.name)] = demo._Held("t", "j", agent, tool.name, revoked=True)
    (decision,) = workload.call(agent, tool)
    assert decision["reason"] == Reason.REVOKED
    assert decision["allowed"] is False


def test_failing_tools_raise_an_alert_with_metadata() -> None:
    workload = demo.Workload(TOOLS, 1, random.Random(1))
    workload._window = {"web_search": [12, 3], "log_agent_run": [12, 0], "x": [4, 4]}
    (alert,) = workload.alerts(15.0)
    assert alert["source"] == "web_search"
    assert alert["level"] == "critical"
    assert '"failures":3' in alert["metadata"]


# -- against a replica -------------------------------------------------------------------------


def test_demo_issues_revokes_and_records_without_hitting_a_limit(
    make_replica: Callable[..., Replica], clock: FakeTime, local_cache: Cache
) -> None:
    replica = make_replica()
    summary = run_demo(replica, clock, seconds=150)  # crosses two rate-limit windows
    assert summary.errors == {}, summary.render()
    assert summary.fatal is None, summary.render()
    assert summary.waits == 0, summary.render()  # the default limits were never reached
    assert summary.issued > 10, summary.render()
    assert summary.revoked >= 2, summary.render()
    assert summary.introspected["active"] > 0
    executions = replica.count("tool_executions", "success")
    assert executions[True] > 0
    assert executions.get(False, 0) > 0
    decisions = replica.count("policy_decisions", "allowed")
    assert decisions[True] > decisions.get(False, 0) > 0
    assert replica.count("cost_updates")[None] > 0
    revoked = replica.runtime.revocations.get_revocation_list(None, limit=1000).items
    assert len(revoked) == summary.revoked
    assert sum(summary.events.values()) == sum(replica.count(m)[None] for m in summary.events)
    assert summary.cache_gets > 0
    assert not summary.cache_forwarded


def test_a_tiny_ingest_limit_is_waited_out_not_failed(
    make_replica: Callable[..., Replica], clock: FakeTime, local_cache: Cache
) -> None:
    replica = make_replica(ratelimit={"ingest_per_min": 20})
    summary = run_demo(replica, clock, seconds=120)
    assert summary.errors == {}, summary.render()
    assert summary.fatal is None, summary.render()
    assert summary.waits > 0, summary.render()
    assert summary.waited_s > 0
    assert summary.stopped == "end of --duration"
    assert replica.count("tool_executions")[None] > 0


def test_an_agent_key_sends_events_and_says_what_it_skipped(
    make_replica: Callable[..., Replica], clock: FakeTime, local_cache: Cache
) -> None:
    replica = make_replica()
    summary = run_demo(replica, clock, "agent", seconds=20)
    assert summary.issued == 0
    assert summary.errors == {}, summary.render()
    assert "admin" in " ".join(summary.skipped)
    assert set(summary.requests) == {"POST /api/m1/events"}
    assert replica.count("tool_executions")[None] > 0


def test_a_viewer_key_is_refused_naming_the_roles_needed(
    make_replica: Callable[..., Replica], clock: FakeTime
) -> None:
    replica = make_replica()
    with pytest.raises(demo.DemoError, match=r"agent.*admin") as refused:
        demo.connect(replica.api("viewer", clock), dict(TOOLS))
    assert "viewer" in str(refused.value)


def test_the_command_reports_a_wrong_key_and_exits_1(
    make_replica: Callable[..., Replica],
    make_settings: Callable[..., Settings],
    capsys: pytest.CaptureFixture[str],
) -> None:
    replica = make_replica()
    args = argparse.Namespace(api="http://testserver", key="m1_wrong", duration=5.0, agents=2)
    code = demo.main(make_settings(), args, transport=replica.client._transport)
    assert code == 1
    err = capsys.readouterr().err
    assert "refused the key" in err
    assert "m1 keys create" in err
    assert "Traceback" not in err


def test_ctrl_c_stops_cleanly_with_a_summary(
    make_replica: Callable[..., Replica], clock: FakeTime, local_cache: Cache
) -> None:
    replica = make_replica()
    client = replica.api("admin", clock)
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        if len(slept) == 5:
            raise KeyboardInterrupt
        clock.sleep(seconds)

    runner = demo.Demo(client, demo.connect(client, dict(TOOLS)), agents=2, duration_s=60,
                       pace=demo.Pace.for_limits(), clock=clock, sleep=sleep)  # fmt: skip
    summary = runner.run()
    assert summary.stopped == "Ctrl-C"
    assert summary.fatal is None
    assert "Ctrl-C" in summary.render()
    assert "requests: POST /api/m1/events" in summary.render()


# -- the command line --------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def test_an_unreachable_api_exits_1_with_a_clear_message(
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    assert cli.main(["demo", "--api", url, "--key", "m1_k", "--duration", "2s"]) == 1
    err = capsys.readouterr().err
    assert f"the M1 API at {url} did not answer" in err
    assert "make run" in err
    assert "Traceback" not in err
    assert "m1_k" not in err


def test_no_key_names_how_to_get_one(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["demo", "--api", "http://127.0.0.1:1"]) == 2
    assert "m1 keys create demo --role admin" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "flag", "why"),
    [
        (["--duration", "25h"], "--duration", "at most 24h"),
        (["--duration", "0"], "--duration", "more than 0"),
        (["--duration", "soon"], "--duration", "not a duration"),
        (["--agents", "0"], "--agents", "1 to 1000"),
        (["--agents", "1001"], "--agents", "1 to 1000"),
        (["--agents", "many"], "--agents", "not a whole number"),
    ],
)
def test_bad_duration_or_agents_is_refused_naming_the_flag(
    argv: list[str], flag: str, why: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["demo", *argv])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}" in err
    assert why in err


def test_durations_parse_like_the_settings() -> None:
    assert [demo.duration_arg(text) for text in ("90", "90s", "5m", "24h")] == [90, 90, 300, 86400]
