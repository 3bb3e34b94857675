"""Incidents: a component's failure streak from the healing threshold until a check passes.

An incident names its component, what triggered it, every action taken with its outcome
(``{action, outcome, at, detail}``), when it started, was escalated and resolved, who suppressed
its actions (the credential that paused healing) and the runbook a person follows. At most one is
unresolved per component. The health flow opens and resolves them (m1lib.ops.streaks), the
self-heal flow appends its actions (:func:`append_action`); ``GET /api/m1/incidents`` and
``m1 incidents`` page them newest first.

Escalation (:func:`escalate`) tells a person three ways: a critical ``error_alert`` on every
dashboard, a log line, and, when ``M1_ALERT_WEBHOOK_URL`` is set, a POST of the incident as JSON.
A webhook that fails is logged and counted (:data:`WEBHOOK_FAILURES`), never raised: the
incident is recorded already, and the alert went out.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Self
from urllib.parse import urlsplit

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session

from m1lib.db.models import Incident
from m1lib.db.session import Database
from m1lib.errors import InputError
from m1lib.ops.report import COMPONENTS, runbook
from m1lib.revocation.records import Page, decode_cursor, encode_cursor
from m1lib.settings import Settings

__all__ = [
    "WEBHOOK_FAILURES",
    "IncidentRecord",
    "add_action",
    "append_action",
    "current",
    "escalate",
    "list_incidents",
    "mark_escalated",
    "open_or_current",
    "resolve",
    "send_webhook",
]

logger = logging.getLogger("m1.incidents")
OPEN, ESCALATED, RESOLVED = "open", "escalated", "resolved"
MAX_PAGE: Final = 500
MAX_ACTIONS: Final = 200  # an incident that lasts keeps its newest actions
ALERT_SOURCE: Final = "m1.healing"


@dataclass(frozen=True, slots=True)
class IncidentRecord:
    """An incident as callers see it; :meth:`to_json` is its HTTP and webhook form."""

    id: int
    component: str
    kind: str
    trigger: str
    status: str
    started_at: datetime
    resolved_at: datetime | None
    escalated_at: datetime | None
    suppressed_by: str | None
    runbook: str
    actions: list[dict[str, Any]]
    last_check: dict[str, Any]

    @classmethod
    def from_row(cls, row: Incident) -> Self:
        return cls(
            id=row.id,
            component=row.component,
            kind=row.kind,
            trigger=row.trigger,
            status=row.status,
            started_at=row.started_at,
            resolved_at=row.resolved_at,
            escalated_at=row.escalated_at,
            suppressed_by=row.suppressed_by,
            runbook=row.runbook,
            actions=list(row.actions or []),
            last_check=dict(row.last_check or {}),
        )

    def to_json(self) -> dict[str, Any]:
        def iso(value: datetime | None) -> str | None:
            return None if value is None else value.isoformat()

        return {
            "id": self.id,
            "component": self.component,
            "kind": self.kind,
            "trigger": self.trigger,
            "status": self.status,
            "startedAt": iso(self.started_at),
            "resolvedAt": iso(self.resolved_at),
            "escalatedAt": iso(self.escalated_at),
            "suppressedBy": self.suppressed_by,
            "runbook": self.runbook,
            "actions": self.actions,
            "lastCheck": self.last_check,
        }


# -- inside a transaction (m1lib.ops.streaks) ----------------------------------------------------


def current(session: Session, component: str) -> Incident | None:
    """The component's unresolved incident, locked for this transaction, or None."""
    return session.scalars(
        select(Incident)
        .where(Incident.component == component, Incident.resolved_at.is_(None))
        .order_by(Incident.id.desc())
        .limit(1)
        .with_for_update()
    ).first()


def open_or_current(
    session: Session,
    component: str,
    *,
    kind: str,
    trigger: str,
    started_at: datetime,
    last_check: dict[str, Any],
) -> Incident:
    """The component's unresolved incident with ``last_check`` updated, or a new one."""
    row = current(session, component)
    if row is None:
        row = Incident(
            component=component,
            kind=kind,
            trigger=trigger[:2000],
            status=OPEN,
            started_at=started_at,
            runbook=runbook(component),
            actions=[],
            last_check=last_check,
        )
        session.add(row)
    else:
        row.last_check = last_check
    return row


def add_action(row: Incident, action: str, outcome: str, detail: str, at: datetime) -> None:
    """Append ``{action, outcome, at, detail}`` (a new list: the JSON column sees the change)."""
    entry = {"action": action, "outcome": outcome, "at": at.isoformat(), "detail": detail[:2000]}
    row.actions = [*(row.actions or []), entry][-MAX_ACTIONS:]


def mark_escalated(row: Incident, reason: str, at: datetime) -> None:
    row.status = ESCALATED
    row.escalated_at = at
    add_action(row, "escalate", "escalated", reason, at)


def resolve(session: Session, component: str, at: datetime) -> Incident | None:
    """A passing check ends the component's incident (escalated ones too); None if none was open."""
    row = current(session, component)
    if row is not None:
        row.status = RESOLVED
        row.resolved_at = at
        add_action(row, "resolve", "resolved", "a check passed", at)
    return row


# -- callers with a database ---------------------------------------------------------------------


def append_action(
    db: Database,
    incident_id: int,
    action: str,
    outcome: str,
    detail: str = "",
    *,
    at: datetime | None = None,
) -> IncidentRecord:
    """Record one remediation step of an incident (the self-heal flow's actions)."""
    with db.transaction() as session:
        row = session.get(Incident, incident_id, with_for_update=True)
        if row is None:
            raise InputError("incident", f"no incident {incident_id}")
        add_action(row, action, outcome, detail, at or datetime.now(UTC))
        session.flush()
        return IncidentRecord.from_row(row)


def check_limit(limit: int) -> None:
    if not 1 <= limit <= MAX_PAGE:
        raise InputError("limit", f"{limit} is out of range", [f"1-{MAX_PAGE}"])


def list_incidents(
    db: Database,
    *,
    component: str | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> Page[IncidentRecord]:
    """Incidents newest first (by id), ``limit`` a page; ``next_cursor`` continues the listing."""
    check_limit(limit)
    query = select(Incident).order_by(Incident.id.desc()).limit(limit + 1)
    if component is not None:
        if component not in COMPONENTS:
            raise InputError(
                "component", f"{component[:80]!r} is not a component", list(COMPONENTS)
            )
        query = query.where(Incident.component == component)
    if cursor is not None:
        query = query.where(Incident.id < decode_cursor("incidents", cursor))
    with db.transaction() as session:
        rows = [IncidentRecord.from_row(row) for row in session.scalars(query)]
    more = len(rows) > limit
    items = rows[:limit]
    return Page(items, encode_cursor("incidents", items[-1].id) if more else None)


# -- escalation ----------------------------------------------------------------------------------


class _Counter:
    """A thread-safe count (webhook failures), read by tests and the health report."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.value = 0

    def add(self) -> None:
        with self._lock:
            self.value += 1


WEBHOOK_FAILURES: Final = _Counter()


def _masked(url: str) -> str:
    """Scheme and host only: a webhook's path or query often is its secret (Slack, Teams)."""
    parts = urlsplit(url)
    return (
        f"{parts.scheme}://{parts.hostname or '?'}{':' + str(parts.port) if parts.port else ''}/***"
    )


def send_webhook(incident: IncidentRecord, settings: Settings) -> bool:
    """POST the incident as JSON to ``M1_ALERT_WEBHOOK_URL``; False (logged, counted) if it failed.

    Nothing is sent when no URL is set (True: nothing failed).
    """
    if settings.alert.webhook_url is None:
        return True
    url = settings.alert.webhook_url.get_secret_value()
    body = {"type": "m1.incident.escalated", "incident": incident.to_json()}
    try:
        response = httpx.post(url, json=body, timeout=settings.alert.webhook_timeout_s)
        response.raise_for_status()
    except (httpx.HTTPError, ValueError) as error:  # ValueError: a URL httpx cannot use
        WEBHOOK_FAILURES.add()
        status = getattr(getattr(error, "response", None), "status_code", None)
        logger.warning(
            "escalation webhook %s failed for incident %s (%s%s)",
            _masked(url),
            incident.id,
            type(error).__name__,
            f", HTTP {status}" if status else "",
        )
        return False
    logger.info("escalation webhook %s took incident %s", _masked(url), incident.id)
    return True


def escalate(incident: IncidentRecord, settings: Settings) -> bool:
    """Tell a person: a critical alert, a log line, the webhook. Never raises; False if any failed."""
    from m1lib.alerts import raise_alert

    logger.error(
        "incident %s escalated: %s keeps failing after the heals allowed; runbook %s",
        incident.id,
        incident.component,
        incident.runbook,
    )
    alerted = True
    try:
        raise_alert(
            "critical",
            ALERT_SOURCE,
            f"{incident.component}: self-healing gave up, a person is needed "
            f"(incident {incident.id}, runbook {incident.runbook})",
            metadata={
                "incidentId": incident.id,
                "component": incident.component,
                "runbook": incident.runbook,
            },
        )
    except Exception as error:  # escalation never raises: the webhook still goes
        alerted = False
        logger.warning(
            "escalation alert of incident %s not raised (%s)", incident.id, type(error).__name__
        )
    return send_webhook(incident, settings) and alerted
