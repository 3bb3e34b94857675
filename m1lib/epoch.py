"""Microseconds since the Unix epoch: M1's one integer time scale (stores, revocation, queries).

Exact integer arithmetic on the ``timedelta`` parts: a float loses the last microsecond at today's
dates, and ``astimezone`` overflows near year 1 and year 9999, where the subtraction does not.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Final

__all__ = ["EPOCH", "from_us", "to_us"]

EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def to_us(moment: datetime) -> int:
    """Microseconds since the epoch of an aware datetime (a naive one raises ``TypeError``)."""
    delta = moment - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_us(us: int) -> datetime:
    """The aware UTC datetime ``us`` microseconds after the epoch."""
    return EPOCH + timedelta(microseconds=int(us))
