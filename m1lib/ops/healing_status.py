"""Where self-healing stands per component: streak, pause, last heal, cooldown left.

One reading for both ``m1 healing status`` and ``GET /api/m1/healing``, so an operator sees the same
thing in either; it reads the streak and override rows (:mod:`m1lib.ops.streaks`) and changes
nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from m1lib.ops.report import COMPONENTS
from m1lib.ops.streaks import (
    ALL_COMPONENTS,
    HealingPolicy,
    OverrideRecord,
    StreakState,
    load_states,
    overrides,
)

if TYPE_CHECKING:
    from m1lib.db.session import Database

__all__ = ["ComponentHealing", "healing_status"]


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat()


@dataclass(frozen=True, slots=True)
class ComponentHealing:
    """One component: its streak (``None``: never checked), whether healing is paused and the
    override that says so (its own, else the global one; a resumed own override shows who resumed),
    and the seconds until another heal may start (0: none pending)."""

    component: str
    streak: StreakState | None
    paused: bool
    override: OverrideRecord | None
    cooldown_left_s: float

    def to_json(self) -> dict[str, Any]:
        state = self.streak or StreakState(self.component)
        return {
            "component": self.component,
            "consecutiveFailures": state.consecutive_failures,
            "lastStatus": None if state.last_status is None else state.last_status.value,
            "lastCheckedAt": _iso(state.last_checked_at),
            "streakStartedAt": _iso(state.streak_started_at),
            "healsInStreak": state.heals_in_streak,
            "lastHealAt": _iso(state.last_heal_at),
            "escalatedAt": _iso(state.escalated_at),
            "cooldownLeftS": round(self.cooldown_left_s, 1),
            "paused": self.paused,
            "override": None if self.override is None else self.override.to_json(),
        }

    def line(self) -> str:
        """One line for the command line."""
        state = self.streak
        if state is None:
            streak = "never checked"
        else:
            streak = f"{state.consecutive_failures} failing in a row, {state.heals_in_streak} heals"
            if state.last_heal_at is not None:
                streak += f", last heal {state.last_heal_at:%Y-%m-%d %H:%M:%S}Z"
            if self.cooldown_left_s > 0:
                streak += f" (cooldown {self.cooldown_left_s:.0f} s left)"
            if state.escalated_at is not None:
                streak += f", escalated {state.escalated_at:%Y-%m-%d %H:%M:%S}Z"
        row = self.override
        mode = f"paused by {row.by}" if self.paused and row else "healing on"
        return f"{self.component:16} {mode:28} {streak}"


def healing_status(
    db: Database,
    policy: HealingPolicy | None = None,
    *,
    components: list[str] | None = None,
    now: datetime | None = None,
) -> list[ComponentHealing]:
    """Each of ``components`` (default every one, in ``COMPONENTS`` order) as the database holds it;
    the cooldown from ``policy`` (default the settings')."""
    at = now or datetime.now(UTC)
    cooldown_s = (policy or HealingPolicy.from_settings(db.settings)).cooldown_s
    states = load_states(db)
    rows = {row.component: row for row in overrides(db)}
    everything = rows.get(ALL_COMPONENTS)
    found = []
    for component in components or list(COMPONENTS):
        own = rows.get(component)
        if own is not None and own.paused:
            override: OverrideRecord | None = own
        elif everything is not None and everything.paused:
            override = everything
        else:
            override = own
        state = states.get(component)
        left = 0.0
        if state is not None and state.last_heal_at is not None:
            left = max(0.0, cooldown_s - (at - state.last_heal_at).total_seconds())
        paused = override is not None and override.paused
        found.append(ComponentHealing(component, state, paused, override, left))
    return found
