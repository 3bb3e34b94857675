"""Token revocation: revoked jtis and not-before rules, checked in memory, true in the database.

How it fits (see docs/contracts.md, "RevocationManager"):

- ``manager``  :class:`RevocationManager`, the one object callers use.
- ``state``    the in-memory set and rule index the hot path reads (no I/O, no reader lock).
- ``store``    the SQL: revoke + audit in one transaction, loads, resync reads, digests, purge.
- ``sync``     threads that keep the state current: Redis pub/sub, cursor resync with an overlap
               window, periodic count-and-hash reconciliation.
- ``records``  the frozen records, pages and cursors handed to callers.
"""

from __future__ import annotations

from m1lib.revocation.manager import RevocationManager, RevocationStatus, max_token_lifetime
from m1lib.revocation.records import (
    AuditEntry,
    Page,
    PurgeSummary,
    RevocationRule,
    RevokedToken,
)
from m1lib.revocation.sync import revocation_channel

__all__ = [
    "AuditEntry",
    "Page",
    "PurgeSummary",
    "RevocationManager",
    "RevocationRule",
    "RevocationStatus",
    "RevokedToken",
    "max_token_lifetime",
    "revocation_channel",
]
