"""The process-wide policy engine behind ``m1lib.verify`` and friends, built on first use.

A service that imports ``m1lib`` and calls ``verify`` gets an engine of the configured keys,
tools and revocation state (``PolicyEngine.from_settings``, recording into the process's metrics
pipeline): the first call loads the revocation state from the database (so it cannot answer
``revocation_state_stale`` for want of a load) and starts the sync threads.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from m1lib.errors import UsageError

if TYPE_CHECKING:
    from m1lib.policy import PolicyDecision, PolicyEngine, Scope
    from m1lib.revocation import RevocationManager
    from m1lib.revocation.records import RevokedToken

_engine: PolicyEngine | None = None
_lock = threading.Lock()


def default_engine() -> PolicyEngine:
    global _engine
    if _engine is None:
        with _lock:
            if _engine is None:
                from m1lib.metrics import default_runtime
                from m1lib.policy import PolicyEngine
                from m1lib.revocation import RevocationManager
                from m1lib.settings import get_settings

                settings = get_settings()
                revocations = RevocationManager.from_settings(settings)
                engine = PolicyEngine.from_settings(
                    settings,
                    revocations=revocations,
                    recorder=default_runtime().recorder.policy_decision_sink(),
                )
                revocations.load()
                revocations.start()
                _engine = engine
    return _engine


def default_revocations() -> RevocationManager:
    """The revocation manager of the default engine (revoke_token, is_revoked)."""
    from m1lib.revocation import RevocationManager

    manager = default_engine().revocations
    if not isinstance(manager, RevocationManager):
        raise UsageError("the installed engine does not check revocation with a RevocationManager")
    return manager


def install_engine(engine: PolicyEngine | None) -> PolicyEngine | None:
    """Make ``engine`` the default (an API replica installs its own); returns the previous one."""
    global _engine
    with _lock:
        previous, _engine = _engine, engine
    return previous


def verify(
    token: str | None, tool_name: str, scope: Scope | str, *, subject: str | None = None
) -> PolicyDecision:
    return default_engine().verify(token, tool_name, scope, subject=subject)  # type: ignore[arg-type]


def issue_token(
    tool_name: str, scope: Scope | str, *, subject: str, ttl: timedelta | None = None
) -> str:
    return default_engine().issue_token(tool_name, scope, subject=subject, ttl=ttl)  # type: ignore[arg-type]


def revoke_token(
    jti: str,
    reason: str,
    revoked_by: str,
    *,
    tool_name: str | None = None,
    expires_at: datetime | None = None,
    **more: Any,
) -> RevokedToken:
    return default_revocations().revoke_token(
        jti, reason, revoked_by, tool_name=tool_name, expires_at=expires_at, **more
    )


def is_revoked(jti: str) -> bool:
    return default_revocations().is_revoked(jti)
