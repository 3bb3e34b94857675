"""Incidents, where self-healing stands, and its manual override (m1lib.ops.incidents,
m1lib.ops.healing_status, m1lib.ops.streaks)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from m1lib.api.bodies import BodyRoute
from m1lib.api.deps import AdminPrincipal, ViewerPrincipal, runtime_of
from m1lib.api.openapi import AUTHENTICATED, problems
from m1lib.api.routes.tokens import CURSOR_PATTERN
from m1lib.ops import incidents, streaks
from m1lib.ops.healing_status import healing_status
from m1lib.text import ReasonText

router = APIRouter(prefix="/api/m1", tags=["operations"], route_class=BodyRoute)

# m1lib.ops.report.COMPONENTS spelled for the schema (a test keeps the two equal)
ComponentName = Literal[
    "database",
    "redis",
    "api",
    "memory",
    "prefect",
    "revocation_sync",
    "event_store",
    "policy_engine",
]


class OverrideRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    component: ComponentName | Literal["*"] | None = Field(
        None, description="One component; omitted or `*`: all of them."
    )
    reason: ReasonText = Field("", description="Why, kept with the override.")


def _override(
    request: Request, body: OverrideRequest | None, by: str, paused: bool
) -> dict[str, Any]:
    runtime = runtime_of(request)
    body = body or OverrideRequest()
    change = streaks.pause if paused else streaks.resume
    rows = change(runtime.db, body.component, by, body.reason)
    return {"overrides": [row.to_json() for row in rows]}


_OVERRIDE_ANSWERS = problems(*AUTHENTICATED, 413, 422)


@router.post(
    "/healing/pause",
    summary="Pause self-healing of one component or all (checks go on, actions are suppressed)",
    responses=_OVERRIDE_ANSWERS,
)
def pause(
    request: Request,
    principal: AdminPrincipal,
    body: Annotated[OverrideRequest | None, Body()] = None,
) -> dict[str, Any]:
    return _override(request, body, principal.name, True)


@router.post(
    "/healing/resume",
    summary="Resume self-healing of one component, or end every pause",
    responses=_OVERRIDE_ANSWERS,
)
def resume(
    request: Request,
    principal: AdminPrincipal,
    body: Annotated[OverrideRequest | None, Body()] = None,
) -> dict[str, Any]:
    return _override(request, body, principal.name, False)


@router.get(
    "/healing",
    summary="Self-healing per component: streak, pause (who, when), last heal, cooldown left",
    responses=problems(*AUTHENTICATED, 422),
)
def healing(
    request: Request,
    _principal: ViewerPrincipal,
    component: Annotated[ComponentName | None, Query(description="Only this component.")] = None,
) -> dict[str, Any]:
    """What `m1 healing status` prints, as JSON."""
    found = healing_status(runtime_of(request).db, components=[component] if component else None)
    return {"components": [item.to_json() for item in found]}


@router.get(
    "/incidents",
    summary="Incidents, newest first, with cursor paging",
    responses=problems(
        *AUTHENTICATED, 400, 422, why={400: "`cursor` is not one this listing handed out."}
    ),
)
def list_incidents(
    request: Request,
    _principal: ViewerPrincipal,
    component: Annotated[ComponentName | None, Query(description="Only this component.")] = None,
    cursor: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=200,
            pattern=CURSOR_PATTERN,
            description="`nextCursor` of the previous page.",
        ),
    ] = None,
    limit: Annotated[
        int, Query(ge=1, le=incidents.MAX_PAGE, description="Incidents per page.")
    ] = 50,
) -> dict[str, Any]:
    page = incidents.list_incidents(
        runtime_of(request).db, component=component, cursor=cursor, limit=limit
    )
    return {"items": [item.to_json() for item in page.items], "nextCursor": page.next_cursor}
