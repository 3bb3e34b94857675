"""Full garbage collections of a benchmark's server process, seen through ``gc.callbacks``.

A full (generation 2) collection holds the GIL, and so the event loop, for as long as it walks
every tracked object: with a thousand open streams, long enough to show in their latencies.
"""

from __future__ import annotations

import gc
import time
from typing import Any


class GcPauses:
    """Full (generation 2) collections of this process: how many, and how long they held it."""

    def __init__(self) -> None:
        self.count, self.total_ms, self.max_ms, self._began = 0, 0.0, 0.0, 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            self._began = time.perf_counter()
            return
        pause = (time.perf_counter() - self._began) * 1000
        self.count, self.total_ms, self.max_ms = (
            self.count + 1,
            self.total_ms + pause,
            max(self.max_ms, pause),
        )

    def figures(self) -> dict[str, float]:
        return {"count": self.count, "total_ms": round(self.total_ms, 1),
                "max_ms": round(self.max_ms, 1)}  # fmt: skip
