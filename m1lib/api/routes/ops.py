"""Operator routes: the full health report, the replicas, and the control channel."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from m1lib import control
from m1lib.api.bodies import body_route
from m1lib.api.deps import AdminPrincipal, ViewerPrincipal, runtime_of
from m1lib.api.openapi import AUTHENTICATED, problems
from m1lib.api.replica import ReplicaRuntime
from m1lib.api.routes.health import readiness_checks
from m1lib.errors import InputError
from m1lib.ops.checks import run_full_health_check
from m1lib.text import JSON_CHECK, JSON_MAX_BYTES, JSON_RULE, CommandNameText, ReplicaIdText

# A command's args may serialise to JSON_MAX_BYTES; escaped in a body they can take four times that.
router = APIRouter(
    prefix="/api/m1", tags=["operations"], route_class=body_route(4 * JSON_MAX_BYTES)
)
HEALTH_JSON = "application/health+json"
_HEALTH_RETRY_S = 5  # a failing report's Retry-After: soon enough to see a repair


class HealthJSONResponse(JSONResponse):
    media_type = HEALTH_JSON


# A failing check answers 503 with the report itself; the credentials' database down, a problem.
_HEALTH_ANSWERS = problems(
    *AUTHENTICATED,
    why={503: "A check fails (the report, health+json), or the credentials are unavailable."},
)
_HEALTH_ANSWERS[503]["content"][HEALTH_JSON] = {"schema": {"type": "object"}}


@router.get(
    "/health",
    summary="Full health report (application/health+json)",
    response_class=HealthJSONResponse,
    responses=_HEALTH_ANSWERS,
)
def health_report(request: Request, _: ViewerPrincipal) -> JSONResponse:
    """Every check, run by this replica now (its own state in process, never over HTTP)."""
    runtime = runtime_of(request)
    checker = runtime.health_checker(lambda: _readiness(runtime))
    report = run_full_health_check(checker)
    body = report.health_json(service_id=runtime.settings.replica_id)
    if report.status.failing:
        headers = {"Retry-After": str(_HEALTH_RETRY_S)}
        return HealthJSONResponse(body, status_code=503, headers=headers)
    return HealthJSONResponse(body)


def _readiness(runtime: ReplicaRuntime) -> tuple[bool, str]:
    """This replica's /health/ready verdict, computed in process."""
    checks = readiness_checks(runtime)
    failing = sorted(name for name, check in checks.items() if not check["ok"])
    return (not failing, f"not ready: {', '.join(failing)}" if failing else "ready")


@router.get(
    "/replicas",
    summary="API replicas seen recently, with their heartbeat figures",
    responses=problems(*AUTHENTICATED, 422),
)
def replicas(
    request: Request,
    _: ViewerPrincipal,
    within_s: Annotated[
        float,
        Query(
            gt=0,
            le=86400,
            allow_inf_nan=False,
            description="Seconds since a replica's last heartbeat.",
        ),
    ] = 60,
) -> list[dict[str, Any]]:
    rows = control.live_replicas(runtime_of(request).db, within_s)
    return [
        {
            name: (value.isoformat() if isinstance(value, datetime) else value)
            for name, value in vars(row).items()
        }
        for row in rows
    ]


class CommandRequest(BaseModel):
    name: CommandNameText = Field(description="A command every replica has registered.")
    args: Annotated[dict[str, Any], JSON_CHECK] = Field(
        default_factory=dict, description=f"The command's arguments: {JSON_RULE}."
    )
    target: ReplicaIdText | None = Field(None, description="One replica id; omitted: all.")
    ttlS: int | None = Field(None, ge=1, le=86400, description="Seconds until replicas skip it.")  # noqa: N815


@router.post(
    "/control/commands",
    status_code=202,
    summary="Issue a command to every replica",
    responses=problems(
        *AUTHENTICATED, 400, 413, 422, why={400: "`name` is no command every replica knows."}
    ),
)
def issue(request: Request, body: CommandRequest, principal: AdminPrincipal) -> dict[str, Any]:
    runtime = runtime_of(request)
    if body.name not in runtime.registry:
        raise InputError("/name", f"{body.name!r} is not a command", runtime.registry.names())
    command_id = control.issue_command(
        runtime.db,
        body.name,
        body.args,
        created_by=principal.name,
        target=body.target,
        ttl_s=body.ttlS,
        settings=runtime.settings,
    )
    return {"id": command_id, "name": body.name, "createdBy": principal.name}


@router.get(
    "/control/commands/{command_id}",
    summary="Acknowledgements of one command",
    responses=problems(*AUTHENTICATED, 422),
)
def acknowledgements(
    request: Request,
    command_id: Annotated[int, Path(ge=1, le=2**63 - 1, description="The id `POST` answered.")],
    _: ViewerPrincipal,
) -> dict[str, Any]:
    acks = control.acks_for(runtime_of(request).db, command_id)
    return {
        "id": command_id,
        "acks": [
            {
                "replica": a.replica_id,
                "ok": a.ok,
                "detail": a.detail,
                "appliedAt": a.applied_at.isoformat(),
            }
            for a in acks
        ],
    }
