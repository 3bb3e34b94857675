"""Remediation steps: how long each is verified."""

from __future__ import annotations

from typing import Any

from m1lib.ops import remediation
from m1lib.ops.remediation import Remediator, plan
from m1lib.ops.report import Status


def test_a_quick_step_is_verified_briefly_and_the_others_for_the_whole_window(
    make_settings: Any,
) -> None:
    """A pool reset acts at once: Redis still refusing the flow's PING after it is no pool's fault,
    so the memory fallback should not wait M1_HEALING_VERIFY_S behind it."""
    settings = make_settings(healing={"verify_s": 15.0})
    windows: list[float] = []

    class Watching(Remediator):
        def issue(self, step: remediation.Step) -> remediation.AckSummary:
            return remediation.AckSummary(None, {}, {}, [])

        def verify(self, component: str, within_s: float, *, backoff: bool = False) -> Status:
            windows.append(within_s)
            return Status.UNHEALTHY

    remediator = Watching(settings, db=None, checker=None)  # type: ignore[arg-type]
    reset, to_memory = plan("redis")
    assert reset.quick
    assert not to_memory.quick
    remediator.run(reset, "redis")
    remediator.run(to_memory, "redis")
    assert windows == [remediation._QUICK_VERIFY_S, 15.0]
