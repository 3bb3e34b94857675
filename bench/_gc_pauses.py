"""Full garbage collections of a benchmark's server process, seen through ``gc.callbacks``.

A full (generation 2) collection holds the GIL, and so the event loop, for as long as it walks
every tracked object: with a thousand open streams, long enough to show in their latencies.
"""

from __future__ import annotations

import gc
import time
from typing import Any


class GcPauses:
    """Full (generation 2) collections of this process: when, and how long each held it."""

    KEPT = 200  # the latest pauses listed

    def __init__(self) -> None:
        self.pauses: list[tuple[float, float]] = []  # (epoch s at start, ms)
        self.count = 0
        self._began = (0.0, 0.0)
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            self._began = (time.time(), time.perf_counter())
            return
        at, began = self._began
        self.pauses.append((at, (time.perf_counter() - began) * 1000))
        del self.pauses[: -self.KEPT]
        self.count += 1

    def figures(self) -> dict[str, Any]:
        """The pauses, and how many objects the collector tracks now (what a full one walks)."""
        return {
            "count": self.count,
            "pauses": [[round(at, 3), round(ms, 1)] for at, ms in self.pauses],
            "tracked_objects": len(gc.get_objects()),
        }
