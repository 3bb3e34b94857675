"""The one way tests wait for something: poll it until it holds, with a generous deadline.

Machines running the suite are small and shared, so deadlines are long and never part of what a
test asserts; a wait that times out says what it waited for and the last thing it saw.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
DEADLINE_S = 60.0


def _describe(seen: object) -> str:
    text = seen if isinstance(seen, str) else repr(seen)
    return text if len(text) <= 2000 else text[:2000] + "..."


def wait_for(
    probe: Callable[[], T],
    what: str,
    *,
    until: Callable[[T], object] = bool,
    timeout_s: float = DEADLINE_S,
    period_s: float = 0.05,
    errors: tuple[type[Exception], ...] = (),
    show: Callable[[T], object] = lambda value: value,
) -> T:
    """Call ``probe`` until ``until(value)`` holds and return that value.

    An exception listed in ``errors`` counts as "not yet" (a server still starting); any other
    one ends the wait at once. At the deadline, AssertionError names ``what`` and the last error
    or value seen (as ``show`` puts it).
    """
    deadline = time.monotonic() + timeout_s
    seen: object = "nothing yet"
    while True:
        try:
            value = probe()
        except errors as error:
            seen = f"{type(error).__name__}: {error}"
        else:
            if until(value):
                return value
            seen = show(value)
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout_s:g} s waiting for {what}; last saw: {_describe(seen)}"
            )
        time.sleep(period_s)
