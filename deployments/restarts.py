"""When `m1 up` restarts a child that died, and when it gives up: a pure rule over a clock.

A child that dies is restarted after a backoff that starts at 1 s and doubles up to 30 s; a child
that stayed up a minute starts again from 1 s (it was healthy, this is a new failure). Restarts of
one child are counted over a sliding window (``M1_UP_RESTART_WINDOW_S``): once it has been
restarted ``M1_UP_RESTART_MAX`` times in it, its next death is final and `m1 up` stops everything,
so a child that cannot run (a port taken, a broken database) ends in one clear message rather than
a restart loop. No I/O here: the supervisor feeds the clock, tests feed a fake one.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from m1lib.settings import Settings

BACKOFF_FIRST_S: Final = 1.0
BACKOFF_MAX_S: Final = 30.0
STABLE_S: Final = 60.0  # up this long: the backoff starts again from BACKOFF_FIRST_S


@dataclass(frozen=True)
class RestartPolicy:
    max_restarts: int  # per child within window_s; 0: never restart
    window_s: float
    first_s: float = BACKOFF_FIRST_S
    max_delay_s: float = BACKOFF_MAX_S
    stable_s: float = STABLE_S

    @classmethod
    def from_settings(cls, settings: Settings) -> RestartPolicy:
        return cls(settings.up.restart_max, settings.up.restart_window_s)

    def delay_s(self, attempt: int) -> float:
        """The wait before restart number ``attempt`` (1-based) of a run of quick deaths."""
        return min(self.max_delay_s, self.first_s * 2.0 ** min(attempt - 1, 32))


@dataclass(frozen=True)
class Restart:
    delay_s: float
    attempt: int  # 1: the first restart since the child last stayed up for stable_s
    in_window: int  # restarts of this child within the window, this one included
    total: int  # restarts of this child since `m1 up` started


@dataclass(frozen=True)
class GiveUp:
    reason: str


class ChildRestarts:
    """One child's restart history: feed it starts and deaths, it answers restart or give up."""

    def __init__(self, name: str, policy: RestartPolicy, now: float) -> None:
        self.name = name
        self.policy = policy
        self.started_at = now
        self.attempt = 0
        self.total = 0
        self.last_restart_at: float | None = None  # clock time of the last restart begun
        self._recent: deque[float] = deque()  # clock times of restarts within the window

    def started(self, now: float) -> None:
        """The child (re)started at ``now``."""
        self.started_at = now

    def died(self, now: float) -> Restart | GiveUp:
        """The child was found dead at ``now``: restart it after ``delay_s``, or give up."""
        policy = self.policy
        if now - self.started_at >= policy.stable_s:
            self.attempt = 0
        while self._recent and self._recent[0] <= now - policy.window_s:
            self._recent.popleft()
        if len(self._recent) >= policy.max_restarts:
            if policy.max_restarts == 0:
                return GiveUp(f"{self.name} is not restarted (M1_UP_RESTART_MAX=0)")
            return GiveUp(
                f"{self.name} was restarted {len(self._recent)} times within "
                f"{policy.window_s:g} s (M1_UP_RESTART_MAX={policy.max_restarts}, "
                f"M1_UP_RESTART_WINDOW_S={policy.window_s:g})"
            )
        self.attempt += 1
        self.total += 1
        self.last_restart_at = now
        self._recent.append(now)
        return Restart(policy.delay_s(self.attempt), self.attempt, len(self._recent), self.total)
