"""Every error M1 raises on purpose, as one tree, so callers and the API can map them by class.

M1Error
├── SettingsError             configuration does not validate (names each M1_* variable): 500
├── InputError                a caller's input is wrong (path, problem, allowed): HTTP 422/400
├── TokenRejectedError        a capability token is not accepted; ``reason`` is the policy Reason
├── AuthenticationError       no credential, or an unknown or revoked one: HTTP 401
├── PermissionDeniedError     the credential's role does not allow the route: HTTP 403
├── ToolDenied                m1lib.tool_call's policy decision denied the call: HTTP 403
├── RateLimitedError          a credential or address is over its limit: HTTP 429, Retry-After
├── UnavailableError          a dependency M1 needs is down (database, Redis): HTTP 503
│   ├── DatabaseUnavailable   the database did not answer (or cannot run M1's statements)
│   └── BusyError             this process is at its limit of concurrent work (queries)
├── DatabaseRefused           the database refused a statement for the values in it: HTTP 400
├── UsageError (RuntimeError) a caller used the library out of order (e.g. before start): HTTP 500
├── CodecError                (m1lib.metrics.codec) a stored metrics payload is not one M1 wrote
└── QueryCancelled            (m1lib.metrics.budget) the query's caller went away mid-query

The HTTP statuses are :data:`m1lib.api.problems.ANSWERS`; ``tests/m1lib/test_errors.py`` fails
when a subclass of ``M1Error`` anywhere in ``m1lib`` is missing from this drawing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from m1lib.vocabulary import Reason

if TYPE_CHECKING:
    from m1lib.policy import PolicyDecision


class M1Error(Exception):
    """Root of M1's errors; ``str(error)`` is safe to show a user (no secrets, no traceback)."""


class SettingsError(M1Error):
    """Raised when ``M1_*`` configuration does not validate; the message names each variable."""


class InputError(M1Error):
    """Raised when a caller's input is wrong; keeps the JSON path, the problem and what is allowed."""

    def __init__(self, path: str, problem: str, allowed: Sequence[str] | None = None) -> None:
        self.path = path
        self.problem = problem
        self.allowed = list(allowed) if allowed else []
        suffix = f"; allowed: {', '.join(self.allowed)}" if self.allowed else ""
        super().__init__(f"{path}: {problem}{suffix}")


class TokenRejectedError(M1Error):
    """Raised by ``TokenCodec.decode`` for a token it does not accept; ``reason`` says why.

    The message never quotes the token: it may be a live credential.
    """

    def __init__(self, reason: Reason, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"token rejected ({reason}): {detail}")


class UnavailableError(M1Error):
    """Raised when a dependency is down; ``retry_after_s`` says when trying again makes sense."""

    def __init__(self, message: str, *, retry_after_s: int = 1) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(message)


class DatabaseUnavailable(UnavailableError):
    """Raised when the database cannot be reached or fails a statement M1 relies on."""


class BusyError(UnavailableError):
    """Raised when this process already runs as much of some work as it allows (queries): the
    caller is refused at once, before any work, and told when to try again."""


class DatabaseRefused(M1Error):
    """Raised when the database refuses a statement for the data in it (a value it cannot store, a
    broken constraint): the same request fails the same way again, so it is no outage to retry.

    Input is checked before it reaches the database, so this is the net under that check; the
    message names the driver's error class, never the statement, its values or the server.
    """


class UsageError(M1Error, RuntimeError):
    """Raised when the library is called out of order (a programming error, not bad input)."""


class AuthenticationError(M1Error):
    """Raised when a request carries no credential, or one that is unknown or revoked."""


class PermissionDeniedError(M1Error):
    """Raised when the credential's role does not allow the route (or no admin exists at all)."""


class ToolDenied(M1Error):
    """Raised by ``m1lib.tool_call`` when the policy engine denies the call, before it runs.

    ``decision`` is the whole :class:`~m1lib.policy.PolicyDecision` (``decision.reason`` says
    why). The message names the tool, the scope checked and the reason, never the token.
    """

    def __init__(self, decision: PolicyDecision) -> None:
        self.decision = decision
        super().__init__(
            f"{decision.tool_name} ({decision.scope.value}): denied, {decision.reason.value}"
        )


class RateLimitedError(M1Error):
    """Raised when a credential or client address is over its limit; says when to come back."""

    def __init__(self, message: str, *, retry_after_s: int) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(message)
