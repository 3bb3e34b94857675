"""What one query may spend: time, memory and the caller's patience, checked as it goes.

A query runs on the caller's thread and cannot be interrupted from outside, so the engine checks
its :class:`QueryBudget` between bounded steps (one chunk, one block of windows, one
aggregation) and before every large allocation. Each step's size is bounded by design (chunks
hold at most ``M1_EVENTS_CHUNK_EVENTS`` events, windows are evaluated in fixed-size blocks), so
the time between two checks is bounded too and ``M1_QUERY_TIMEOUT_S`` holds for every phase.
Memory is checked against an estimate *before* allocating: a query that would need more than
``M1_QUERY_MAX_MEMORY_MB`` is refused with the member that makes it big, never half-computed.
A caller that goes away (an HTTP client that disconnects) sets ``cancel`` and the query stops
at its next check.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Final

from m1lib.errors import InputError, M1Error

__all__ = ["Limits", "QueryBudget", "QueryCancelled", "mebibytes"]

_MB: Final = 1 << 20

# The member of the query each phase mostly depends on: where a timeout points the user.
_PHASE_PATHS: Final = {
    "planning": "/timeRange",
    "scanning": "/timeRange",
    "grouping": "/groupBy",
    "aggregating": "/aggregations",
    "ordering": "/orderBy",
    "detecting": "/detect",
}


@dataclass(frozen=True)
class Limits:
    """The guards of ``M1_QUERY_*``."""

    max_range: timedelta = timedelta(days=90)
    max_groups: int = 100_000
    max_rows: int = 50_000
    timeout_s: float = 10.0
    max_memory_bytes: int = 256 * _MB
    max_detect_cells: int = 20_000_000


class QueryCancelled(M1Error):
    """Raised inside a query whose caller went away; nobody is left to see the answer."""


def mebibytes(nbytes: int) -> str:
    return f"{nbytes / _MB:,.0f} MB" if nbytes >= _MB else f"{nbytes / 1024:,.0f} KB"


class QueryBudget:
    """Time, memory and cancellation of one query; :meth:`check` between steps.

    >>> budget = QueryBudget(limits, cancel=disconnected)
    >>> budget.phase = "scanning"
    >>> budget.check()  # InputError past M1_QUERY_TIMEOUT_S, QueryCancelled once cancelled
    >>> budget.reserve(rows * 40, "/timeRange", f"reading {rows} events")
    """

    def __init__(
        self,
        limits: Limits,
        *,
        cancel: threading.Event | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.limits = limits
        self.cancel = cancel
        self.clock = clock
        self.started = clock()
        self.deadline = self.started + limits.timeout_s
        self.phase = "planning"

    def check(self) -> None:
        """Raise if the caller left or the time is up; cheap enough to call per step."""
        if self.cancel is not None and self.cancel.is_set():
            raise QueryCancelled(f"the caller went away while the query was {self.phase}")
        if self.clock() > self.deadline:
            raise InputError(
                _PHASE_PATHS.get(self.phase, "/"),
                f"the query ran longer than {self.limits.timeout_s:g} s (M1_QUERY_TIMEOUT_S) "
                f"while {self.phase}",
                ["a shorter timeRange", "fewer groups", "a coarser interval", "fewer aggregations"],
            )

    def fits(self, nbytes: int) -> bool:
        """Whether an allocation of about ``nbytes`` stays within M1_QUERY_MAX_MEMORY_MB."""
        return nbytes <= self.limits.max_memory_bytes

    def reserve(self, nbytes: int, path: str, what: str, allowed: list[str] | None = None) -> None:
        """Refuse, naming ``path``, a step estimated to need more than the memory bound.

        Estimates are of the step's own arrays; steps run one after another and free what they
        no longer need, so the largest estimate is about the query's peak.
        """
        self.check()
        if nbytes > self.limits.max_memory_bytes:
            raise InputError(
                path,
                f"{what} needs about {mebibytes(nbytes)}, over the "
                f"{mebibytes(self.limits.max_memory_bytes)} a query may use "
                "(M1_QUERY_MAX_MEMORY_MB)",
                allowed or ["a shorter timeRange", "fewer groupBy fields", "a coarser interval"],
            )
