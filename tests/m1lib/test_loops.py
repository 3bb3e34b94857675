"""The background-work toolkit: thread lifecycle, wake-ups and backoff, on real threads."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from m1lib.loops import BACKOFF_MAX_S, BACKOFF_MIN_S, Backoff, LoopThreads
from tests.waiting import wait_for

logger = logging.getLogger("m1.test.loops")


def _names(prefix: str) -> set[str]:
    return {t.name for t in threading.enumerate() if t.name.startswith(prefix)}


@pytest.fixture
def loops() -> Iterator[LoopThreads]:
    threads = LoopThreads("m1-test-loops", logger=logger)
    yield threads
    threads.stop()


class Counter:
    """A loop that counts its passes, sleeping in ``pause`` for a long period."""

    def __init__(self, loops: LoopThreads, period_s: float = 60.0) -> None:
        self.loops = loops
        self.period_s = period_s
        self.passes = 0

    def run(self) -> None:
        while self.loops.pause(self.period_s):
            self.passes += 1


def test_threads_are_named_after_the_prefix_and_stop_together(loops: LoopThreads) -> None:
    counter = Counter(loops)
    assert loops.start([("one", counter.run), ("two", counter.run)])
    assert loops.running
    assert _names("m1-test-loops-") == {"m1-test-loops-one", "m1-test-loops-two"}
    assert loops.stop()
    assert not loops.running
    assert loops.stopping
    assert not _names("m1-test-loops-")


def test_a_second_start_does_nothing(loops: LoopThreads) -> None:
    counter = Counter(loops)
    before: list[int] = []
    assert loops.start([("count", counter.run)], before=lambda: before.append(1))
    threads = [t for t in threading.enumerate() if t.name == "m1-test-loops-count"]
    assert not loops.start([("count", counter.run)], before=lambda: before.append(2))
    assert [t for t in threading.enumerate() if t.name == "m1-test-loops-count"] == threads
    assert before == [1]


def test_stop_is_safe_before_start_and_twice() -> None:
    loops = LoopThreads("m1-test-loops", logger=logger)
    after: list[str] = []
    assert not loops.stop(after=lambda: after.append("before start"))
    counter = Counter(loops)
    loops.start([("count", counter.run)])
    assert loops.stop(after=lambda: after.append("first"))
    assert not loops.stop(after=lambda: after.append("second"))
    assert after == ["before start", "first", "second"]


def test_a_stopped_component_starts_again(loops: LoopThreads) -> None:
    counter = Counter(loops)
    loops.start([("count", counter.run)])
    loops.stop()
    passes = counter.passes
    assert loops.start([("count", counter.run)])
    assert not loops.stopping
    wait_for(lambda: counter.passes > passes, "the first pass after a restart")


def test_the_first_pass_runs_at_once_and_a_wake_runs_another(loops: LoopThreads) -> None:
    counter = Counter(loops, period_s=3600.0)
    loops.start([("count", counter.run)])
    wait_for(lambda: counter.passes == 1, "the first pass, at once", show=lambda _: counter.passes)
    loops.wake()
    wait_for(lambda: counter.passes == 2, "the pass after a wake-up", show=lambda _: counter.passes)


def test_the_owner_events_are_the_ones_used() -> None:
    stop, wake = threading.Event(), threading.Event()
    loops = LoopThreads("m1-test-loops", stop=stop, wake=wake, logger=logger)
    counter = Counter(loops, period_s=3600.0)
    loops.start([("count", counter.run)])
    wait_for(lambda: counter.passes == 1, "the first pass")
    wake.set()  # what a hot path does: set the event, no method call
    wait_for(lambda: counter.passes == 2, "the pass after the owner set wake")
    loops.stop()
    assert stop.is_set()


def test_sleep_ends_on_stop_not_on_a_wake(loops: LoopThreads) -> None:
    passes: list[int] = []

    def run() -> None:
        while True:
            passes.append(1)
            if not loops.sleep(3600.0):
                return

    loops.start([("sleeper", run)])
    wait_for(lambda: passes, "the first pass")
    loops.wake()
    assert not loops.stop_event.wait(0.2)  # give a wrong wake-up the chance to run a pass
    assert len(passes) == 1
    assert loops.stop()
    assert not _names("m1-test-loops-sleeper")


def test_a_thread_that_will_not_stop_is_reported_not_waited_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    loops = LoopThreads("m1-test-loops", logger=logger, join_timeout_s=0.2)
    release = threading.Event()
    loops.start([("stuck", lambda: release.wait(60))])
    try:
        with caplog.at_level(logging.WARNING, logger=logger.name):
            assert loops.stop()  # returns after the join timeout, not after 60 s
        assert "m1-test-loops-stuck did not stop within 0.2 s" in caplog.text
        assert not loops.running
    finally:
        release.set()
    wait_for(lambda: not _names("m1-test-loops-stuck"), "the stuck thread to end")


# -- backoff -------------------------------------------------------------------------------


class RecordingStop(threading.Event):
    """A stop event whose waits return at once and are recorded."""

    def __init__(self) -> None:
        super().__init__()
        self.waits: list[float] = []

    def wait(self, timeout: float | None = None) -> bool:
        assert timeout is not None
        self.waits.append(timeout)
        return self.is_set()


def test_backoff_doubles_up_to_its_cap_and_resets() -> None:
    stop = RecordingStop()
    backoff = Backoff(stop)
    assert (backoff.min_s, backoff.max_s) == (BACKOFF_MIN_S, BACKOFF_MAX_S) == (0.1, 5.0)
    for _ in range(8):
        assert backoff.wait()
    assert stop.waits == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0])
    assert backoff.delay_s == 5.0
    backoff.reset()
    assert backoff.delay_s == 0.1
    backoff.wait()
    assert stop.waits[-1] == pytest.approx(0.1)


def test_backoff_bounds_are_per_instance() -> None:
    stop = RecordingStop()
    backoff = Backoff(stop, min_s=1.0, max_s=3.0)
    for _ in range(3):
        backoff.wait()
    assert stop.waits == [1.0, 2.0, 3.0]


def test_stop_ends_a_backoff_wait_at_once() -> None:
    stop = threading.Event()
    backoff = Backoff(stop, min_s=3600.0, max_s=3600.0)
    answers: list[bool] = []
    waiter = threading.Thread(target=lambda: answers.append(backoff.wait()))
    waiter.start()
    stop.set()
    waiter.join(30)
    assert not waiter.is_alive(), "the backoff wait did not end on stop"
    assert answers == [False]


def test_loop_threads_hand_out_a_backoff_on_their_stop_event(loops: LoopThreads) -> None:
    backoff = loops.backoff()
    loops.stop()  # stopping: the wait returns at once, and says so
    assert not backoff.wait()


# -- weight ----------------------------------------------------------------------------------


def test_the_toolkit_and_the_recorder_load_no_redis() -> None:
    """The recorder (hot path) imports loops.py; neither may pull in redis."""
    code = "import m1lib.loops, m1lib.metrics, sys; print('redis' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "False"
