"""Self-heal tasks over ``m1lib.ops.remediation``: look, run one step, record it on the incident.

Each task builds what it needs for its own run (database, Redis client, checker) and closes it,
like every M1 task (tasks.resources). A step retries on a database outage (``tasks.retry``):
commands are idempotent, so issuing one again is safe. None is answered from Prefect's cache: a
run looks at its component again after a step, and at its incident again once the database is
back, with the same arguments.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from prefect import task
from prefect.cache_policies import NO_CACHE

from m1lib.errors import M1Error
from m1lib.ops import incidents, streaks
from m1lib.ops.checks import HealthChecker
from m1lib.ops.incidents import IncidentRecord
from m1lib.ops.remediation import Remediator, Step, StepOutcome
from m1lib.redis_conn import make_redis
from m1lib.settings import prefect_api_url_from_environment
from tasks.resources import database
from tasks.retry import io_task

logger = logging.getLogger("m1.flows.self_heal")


@contextmanager
def remediator() -> Iterator[Remediator]:
    """A remediator on this run's database and Redis, with a checker of the flow's own."""
    with database() as db:
        settings = db.settings
        checker = HealthChecker(
            settings=settings,
            db=db,
            redis_client=make_redis(settings),
            prefect_api_url=prefect_api_url_from_environment() or settings.prefect_api_url,
        )
        try:
            yield Remediator(settings, db=db, checker=checker)
        finally:
            checker.close()


@task(name="check-component", cache_policy=NO_CACHE)
def look(component: str) -> tuple[str, str, list[str], str | None]:
    """(status, messages, live replicas on a memory cache, paused by) before any step."""
    with remediator() as healer:
        status, message = healer.check(component)
        try:
            on_memory = healer.replicas_on_memory() if component == "redis" else []
            paused = streaks.paused_by(healer.db, component)
        except M1Error as error:  # the database is away: no pause can be read, none applies
            logger.warning("self-heal of %s: database unavailable (%s)", component, error)
            on_memory, paused = [], None
        return status.value, message, on_memory, paused


@io_task("run-remediation-step")
def run_step(component: str, step: Step) -> StepOutcome:
    """Issue the step's command, wait for the replicas' acks, re-run the check until it passes."""
    with remediator() as healer:
        return healer.run(step, component)


@task(name="find-incident", cache_policy=NO_CACHE)
def find_incident(component: str) -> int | None:
    """The component's unresolved incident, when the run was not given one; None when there is
    none or the database cannot say (the steps still run; nothing is recorded)."""
    try:
        with database() as db, db.transaction() as session:
            row = incidents.current(session, component)
            return None if row is None else int(row.id)
    except M1Error as error:
        logger.warning("self-heal of %s: no incident found (%s)", component, error)
        return None


@task(name="record-on-incident", cache_policy=NO_CACHE)
def record(incident_id: int, action: str, outcome: str, detail: str) -> bool:
    """Append the step to the incident; False (logged) when the database cannot take it."""
    try:
        with database() as db:
            incidents.append_action(db, incident_id, action, outcome, detail)
    except M1Error as error:
        logger.warning("incident %s: %s/%s not recorded (%s)", incident_id, action, outcome, error)
        return False
    return True


@task(name="escalate-incident", cache_policy=NO_CACHE)
def escalate(incident_id: int, reason: str) -> bool:
    """Mark the incident escalated and tell a person (alert, log, webhook). An incident a
    passing check resolved meanwhile (the health flow, between this run's check and now) stays
    resolved and nobody is told: False."""
    from m1lib.db.models import Incident

    try:
        with database() as db:
            with db.transaction() as session:
                row = session.get(Incident, incident_id, with_for_update=True)
                if row is None:
                    return False
                if row.resolved_at is not None:
                    logger.info("incident %s resolved meanwhile: not escalated", incident_id)
                    return False
                incidents.mark_escalated(row, reason, datetime.now(UTC))
                session.flush()
                found = IncidentRecord.from_row(row)
            return incidents.escalate(found, db.settings)
    except M1Error as error:
        logger.warning("incident %s not escalated (%s)", incident_id, error)
        return False
