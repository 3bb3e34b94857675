"""`m1 up`'s restart rule (deployments/restarts.py) on a fake clock, and the supervisor applying
it to real (tiny) child processes: backoff doubling to 30 s, reset after a minute up, give-up after
M1_UP_RESTART_MAX restarts in the window, a log line and an alert per restart."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deployments.local import ChildExited, Supervisor
from deployments.restarts import ChildRestarts, GiveUp, Restart, RestartPolicy
from m1lib.settings import Settings

POLICY = RestartPolicy(max_restarts=100, window_s=600)


def _restart(decision: Restart | GiveUp) -> Restart:
    assert isinstance(decision, Restart), decision
    return decision


def test_quick_deaths_double_the_backoff_from_1_s_to_at_most_30_s() -> None:
    history = ChildRestarts("api", POLICY, now=0.0)
    delays, now = [], 0.0
    for _ in range(8):
        now += 2.0  # dies 2 s after each start: never stable
        decision = _restart(history.died(now))
        delays.append(decision.delay_s)
        now += decision.delay_s
        history.started(now)
    assert delays == [1, 2, 4, 8, 16, 30, 30, 30]
    assert history.total == 8
    assert history.last_restart_at is not None


def test_a_child_that_stayed_up_a_minute_starts_again_from_1_s() -> None:
    history = ChildRestarts("deployment-runner", POLICY, now=0.0)
    assert _restart(history.died(5.0)).delay_s == 1
    history.started(6.0)
    assert _restart(history.died(10.0)).delay_s == 2
    history.started(12.0)
    stable = _restart(history.died(12.0 + 60.0))  # up for exactly a minute
    assert (stable.delay_s, stable.attempt, stable.total) == (1, 1, 3)


def test_gives_up_after_the_maximum_restarts_in_the_window_and_counts_again_after_it() -> None:
    policy = RestartPolicy(max_restarts=3, window_s=100)
    history = ChildRestarts("api", policy, now=0.0)
    for at in (10.0, 20.0, 30.0):
        assert _restart(history.died(at)).in_window <= 3
        history.started(at + 1)
    final = history.died(40.0)
    assert isinstance(final, GiveUp)
    assert "restarted 3 times within 100 s" in final.reason
    assert "M1_UP_RESTART_MAX=3" in final.reason
    # the window slides: a death long after the first restarts is restarted again
    later = _restart(history.died(125.0))
    assert later.in_window == 2  # the restarts at 30 and 125 s


def test_a_maximum_of_0_never_restarts() -> None:
    history = ChildRestarts("prefect-server", RestartPolicy(max_restarts=0, window_s=60), 0.0)
    decision = history.died(1000.0)
    assert isinstance(decision, GiveUp)
    assert "M1_UP_RESTART_MAX=0" in decision.reason


@settings(deadline=None, max_examples=200)
@given(
    max_restarts=st.integers(0, 10),
    gaps=st.lists(st.floats(0, 200, allow_nan=False), max_size=40),
)
def test_never_more_restarts_in_a_window_than_allowed_and_delays_stay_bounded(
    max_restarts: int, gaps: list[float]
) -> None:
    policy = RestartPolicy(max_restarts=max_restarts, window_s=120)
    history = ChildRestarts("api", policy, 0.0)
    now, restarts = 0.0, []
    for gap in gaps:
        now += gap
        decision = history.died(now)
        if isinstance(decision, GiveUp):
            break
        assert 1 <= decision.delay_s <= 30
        restarts.append(now)
        assert len([t for t in restarts if t > now - 120]) <= max_restarts
        now += decision.delay_s
        history.started(now)


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_supervisor_restarts_a_dead_child_after_its_backoff_then_gives_up(
    make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    """Real processes, a fake clock: each death is a log line and a warning alert naming the
    child, its exit code and the attempt; the death past M1_UP_RESTART_MAX is a critical alert
    and ChildExited, which stops everything."""
    supervisor = Supervisor(make_settings(up={"restart_max": 2}), serve=False)
    clock = _Clock()
    supervisor.clock = clock
    alerts: list[tuple[str, str, dict[str, Any]]] = []
    supervisor._alert = lambda level, message, facts: alerts.append((level, message, facts))  # type: ignore[method-assign]
    argv = [sys.executable, "-c", "raise SystemExit(3)"]

    def start() -> None:
        supervisor._spawn("api", argv)

    supervisor.starters = {"api": start}
    caplog.set_level(logging.INFO, logger="m1.up")
    try:
        start()
        pids = []
        for attempt, delay in ((1, 1), (2, 2)):
            (child,) = supervisor.children
            pids.append(child.process.pid)
            child.process.wait(timeout=30)
            supervisor._watch_children()
            assert supervisor.due == {"api": clock.now + delay}
            level, message, facts = alerts[-1]
            assert level == "warning"
            assert f"api (pid {child.process.pid}) exited with code 3" in message
            assert f"restarting it in {delay} s (attempt {attempt}" in message
            assert facts["child"] == "api"
            assert facts["exitCode"] == 3
            assert facts["attempt"] == attempt
            assert message in caplog.text
            supervisor._watch_children()  # not yet due: nothing starts
            assert supervisor.children[0].process.pid == pids[-1]
            clock.now += delay
            supervisor._watch_children()
            assert supervisor.due == {}
            assert supervisor.children[0].process.pid not in pids  # a new process
            assert f"restarted api (pid {supervisor.children[0].process.pid}" in caplog.text
        supervisor.children[0].process.wait(timeout=30)
        with pytest.raises(ChildExited, match="restarted 2 times within 600 s"):
            supervisor._watch_children()
        assert alerts[-1][0] == "critical"
        assert "giving up, stopping everything" in alerts[-1][1]
        assert alerts[-1][2]["restarts"] == 2
        assert len(alerts) == 3
    finally:
        supervisor.stop()


def test_without_redis_or_a_key_the_alert_is_the_log_line_alone(
    make_settings: Callable[..., Settings],
) -> None:
    """`m1 up --no-serve` makes no runner key: with no Redis and no M1_API_KEY an alert has no
    destination, so no forwarding runtime is built (its sends would all be refused)."""
    supervisor = Supervisor(make_settings(), serve=False)
    supervisor._alert("warning", "api exited", {"child": "api"})
    assert supervisor._alerts is None
