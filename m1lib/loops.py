"""Background work in m1lib: named daemon threads started and stopped together, and backoff.

Every background thread of m1lib (the control agent, the revocation synchroniser, the metrics
recorder, stream and pipeline) runs through :class:`LoopThreads`, so they share one set of rules:
a second start does nothing, stop is safe twice or before start, the first pass runs at once, a
wake-up runs a pass now, and a thread that will not stop is reported, not waited on forever.
:class:`Backoff` is the one retry pacing of loops that lose Redis or the database.

This module imports nothing beyond the standard library: the recorder loads it on the hot path.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Final

__all__ = ["BACKOFF_MAX_S", "BACKOFF_MIN_S", "JOIN_TIMEOUT_S", "Backoff", "Loop", "LoopThreads"]

BACKOFF_MIN_S: Final = 0.1  # first retry after a failure
BACKOFF_MAX_S: Final = 5.0  # the cap of the doubling: an outage is retried at least this often
JOIN_TIMEOUT_S: Final = 10.0  # how long stop waits for each thread before warning

Loop = tuple[str, Callable[[], None]]
"""A thread's name (after the prefix) and its body, which returns once ``stop`` is set."""


class LoopThreads:
    """The threads of one component, named ``<prefix>-<name>``.

    ``stop`` and ``wake`` may belong to the owner (its loops and hot paths set or watch them);
    without them the component gets its own. Loops sleep with :meth:`pause` (woken early by
    :meth:`wake`) or on ``stop`` alone, and return once ``stop`` is set.
    """

    def __init__(
        self,
        prefix: str,
        *,
        logger: logging.Logger,
        stop: threading.Event | None = None,
        wake: threading.Event | None = None,
        join_timeout_s: float = JOIN_TIMEOUT_S,
    ) -> None:
        self._prefix = prefix
        self.stop_event = stop if stop is not None else threading.Event()
        self.wake_event = wake if wake is not None else threading.Event()
        self._logger = logger
        self._join_timeout_s = join_timeout_s
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    @property
    def running(self) -> bool:
        return bool(self._threads)

    @property
    def stopping(self) -> bool:
        """True once :meth:`stop` began (and until the next :meth:`start`)."""
        return self.stop_event.is_set()

    def start(self, loops: Sequence[Loop], *, before: Callable[[], None] | None = None) -> bool:
        """Start every loop (first pass at once); False when they were already running."""
        with self._lock:
            if self._threads:
                return False
            self.stop_event.clear()
            self.wake_event.set()
            if before is not None:
                before()
            for name, target in loops:
                thread = threading.Thread(target=target, name=f"{self._prefix}-{name}", daemon=True)
                thread.start()
                self._threads.append(thread)
            return True

    def stop(self, *, after: Callable[[], None] | None = None) -> bool:
        """Signal and join every thread, then run ``after``; safe twice or before ``start``.

        Returns whether threads were running, so an owner can skip its final pass when not.
        """
        with self._lock:
            threads, self._threads = self._threads, []
            self.stop_event.set()
            self.wake_event.set()
            for thread in threads:
                thread.join(self._join_timeout_s)
                if thread.is_alive():
                    self._logger.warning(
                        "%s did not stop within %g s", thread.name, self._join_timeout_s
                    )
            if after is not None:
                after()
            return bool(threads)

    def wake(self) -> None:
        """Make the loops sleeping in :meth:`pause` run their next pass now."""
        self.wake_event.set()

    def wait_drained(self, pending: Callable[[], object], timeout_s: float) -> bool:
        """Wake the loops until ``pending()`` is falsy (their outbox sent, say); False when
        ``timeout_s`` passed first. For a caller's flush, not for the loops themselves."""
        deadline = time.monotonic() + timeout_s
        while pending():
            if time.monotonic() > deadline:
                return False
            self.wake()
            time.sleep(0.005)
        return True

    def pause(self, timeout_s: float) -> bool:
        """Sleep until woken, stopped or ``timeout_s``; False when stopping.

        The wake-up is consumed before the pass it starts, so one arriving during the pass
        causes another. The first call after :meth:`start` returns at once.
        """
        self.wake_event.wait(timeout_s)
        if self.stop_event.is_set():
            return False
        self.wake_event.clear()
        return True

    def sleep(self, timeout_s: float) -> bool:
        """Sleep ``timeout_s`` unless stopped first (a wake-up does not end it); False when
        stopping. For loops on a fixed period that wake-ups must not hurry."""
        return not self.stop_event.wait(timeout_s)

    def backoff(self) -> Backoff:
        """A :class:`Backoff` whose waits end when these loops stop."""
        return Backoff(self.stop_event)


class Backoff:
    """Doubling retry delays from ``min_s`` to ``max_s``; each wait ends at once on ``stop``.

    >>> backoff = Backoff(stop)
    >>> while not stop.is_set():
    ...     try:
    ...         work()
    ...         backoff.reset()
    ...     except ConnectionError:
    ...         backoff.wait()
    """

    def __init__(
        self,
        stop: threading.Event,
        *,
        min_s: float = BACKOFF_MIN_S,
        max_s: float = BACKOFF_MAX_S,
    ) -> None:
        self._stop = stop
        self.min_s = min_s
        self.max_s = max_s
        self.delay_s = min_s
        """The next wait (what a "retrying in ..." message says)."""

    def reset(self) -> None:
        """Back to ``min_s``: the last attempt worked."""
        self.delay_s = self.min_s

    def wait(self) -> bool:
        """Sleep the current delay (less when stopped), then double it; False when stopped."""
        stopped = self._stop.wait(self.delay_s)
        self.delay_s = min(self.delay_s * 2, self.max_s)
        return not stopped
