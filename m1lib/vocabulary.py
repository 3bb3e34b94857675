"""The words of a policy decision: the scopes an approval grants and the reasons a decision gives.

A leaf: it imports nothing of M1, so every layer (errors, tokens, policy, revocation) can name
them without importing the layer that uses them. :mod:`m1lib.tokens` and :mod:`m1lib.policy`
re-export both, where callers look for them.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

__all__ = ["SCOPE_RANK", "VALIDATION_PROBE_TOOL", "Reason", "Scope"]

VALIDATION_PROBE_TOOL: Final = "m1_validation_probe"
"""The built-in tool that marks the production-validation suite's probe tokens: it guards
nothing, and workloads (``m1 demo``) leave it alone."""


class Scope(StrEnum):
    """What an approval allows, ranked ``read < write < execute``; a token covers its rank and below.

    Ordering compares ranks, not text (as plain strings ``"execute" < "read"``):

    >>> Scope.EXECUTE > Scope.WRITE > Scope.READ
    True
    """

    READ = "read"
    WRITE = "write"
    EXECUTE = "execute"

    @property
    def rank(self) -> int:
        return SCOPE_RANK[self]

    def covers(self, needed: str) -> bool:
        """Whether an approval of this scope is enough for ``needed``."""
        return SCOPE_RANK[self] >= SCOPE_RANK[Scope(needed)]

    def __lt__(self, other: str) -> bool:
        return SCOPE_RANK[self] < SCOPE_RANK[Scope(other)]

    def __le__(self, other: str) -> bool:
        return SCOPE_RANK[self] <= SCOPE_RANK[Scope(other)]

    def __gt__(self, other: str) -> bool:
        return SCOPE_RANK[self] > SCOPE_RANK[Scope(other)]

    def __ge__(self, other: str) -> bool:
        return SCOPE_RANK[self] >= SCOPE_RANK[Scope(other)]


# Keyed by the members; a plain "read" finds the same entry (a StrEnum hashes as its text).
SCOPE_RANK: Final[dict[str, int]] = {Scope.READ: 0, Scope.WRITE: 1, Scope.EXECUTE: 2}


class Reason(StrEnum):
    """Why a policy decision came out as it did: the fixed codes of docs/contracts.md."""

    OK = "ok"
    UNKNOWN_TOOL = "unknown_tool"
    TOKEN_REQUIRED = "token_required"  # noqa: S105 - a reason code
    MALFORMED = "malformed"
    INVALID_SIGNATURE = "invalid_signature"
    UNKNOWN_KEY = "unknown_key"
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    WRONG_AUDIENCE = "wrong_audience"
    WRONG_ISSUER = "wrong_issuer"
    TOOL_MISMATCH = "tool_mismatch"
    SUBJECT_MISMATCH = "subject_mismatch"
    INSUFFICIENT_SCOPE = "insufficient_scope"
    REVOKED = "revoked"
    REVOCATION_STATE_STALE = "revocation_state_stale"
    WRONG_TYPE = "wrong_type"
