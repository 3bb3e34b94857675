"""The one way tests wait: poll a condition until it holds, with a deadline generous for a busy
2-core CI machine, and fail saying what was awaited and what was seen last.

Nothing here asserts how long something took: a deadline only stops a test that would otherwise
hang. Tests that need a longer wait (a Prefect flow run) pass a multiple of :data:`DEADLINE_S`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["DEADLINE_S", "WaitTimeout", "wait_for"]

DEADLINE_S = 60.0
"""How long any one condition may take to hold: minutes of slack over the seconds it needs."""

T = TypeVar("T")


class WaitTimeout(AssertionError):
    """A condition did not hold by its deadline; the message says what and what was seen."""


def wait_for(
    condition: Callable[[], T],
    what: str,
    *,
    timeout: float = DEADLINE_S,
    interval: float = 0.02,
    seen: Callable[[], Any] | None = None,
) -> T:
    """Poll ``condition`` until it returns something truthy, and return that.

    At the deadline, raise :class:`WaitTimeout` naming ``what`` and the last value seen: the
    condition's own, or ``seen()`` when given (the state that explains a failure, e.g. the acks
    so far and the replicas' heartbeats). Exceptions from ``condition`` propagate: a dead
    process should fail the test at once, not after the deadline.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            last = seen() if seen is not None else value
            raise WaitTimeout(
                f"timed out after {timeout:g} s waiting for {what}; last saw: {last!r}"
            )
        time.sleep(interval)
