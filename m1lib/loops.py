"""Background loops of one component: named daemon threads started together and joined together.

The control agent and the revocation synchroniser each run a few loops that watch one ``stop``
event and sleep on one ``wake`` event; this keeps their start/stop rules in one place: a second
start does nothing, stop is safe twice, and a thread that will not stop is reported, not waited on
forever.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

Loop = tuple[str, Callable[[], None]]


class LoopThreads:
    """The threads of ``loops``, named ``<prefix>-<name>``; ``stop``/``wake`` belong to the owner."""

    def __init__(
        self,
        prefix: str,
        *,
        stop: threading.Event,
        wake: threading.Event,
        logger: logging.Logger,
        join_timeout_s: float = 10.0,
    ) -> None:
        self._prefix = prefix
        self._stop = stop
        self._wake = wake
        self._logger = logger
        self._join_timeout_s = join_timeout_s
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    @property
    def running(self) -> bool:
        return bool(self._threads)

    def start(self, loops: Sequence[Loop], *, before: Callable[[], None] | None = None) -> bool:
        """Start every loop (first pass at once); False when they were already running."""
        with self._lock:
            if self._threads:
                return False
            self._stop.clear()
            self._wake.set()
            if before is not None:
                before()
            for name, target in loops:
                thread = threading.Thread(target=target, name=f"{self._prefix}-{name}", daemon=True)
                thread.start()
                self._threads.append(thread)
            return True

    def stop(self, *, after: Callable[[], None] | None = None) -> None:
        """Signal and join every thread; safe to call twice or before ``start``."""
        with self._lock:
            threads, self._threads = self._threads, []
            self._stop.set()
            self._wake.set()
            for thread in threads:
                thread.join(self._join_timeout_s)
                if thread.is_alive():
                    self._logger.warning(
                        "%s did not stop within %.0f s", thread.name, self._join_timeout_s
                    )
            if after is not None:
                after()
