"""Liveness and readiness: what a load balancer and an orchestrator ask of a replica."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from m1lib.api.bodies import BodyRoute
from m1lib.api.openapi import problems
from m1lib.api.problems import problem
from m1lib.api.replica import ReplicaRuntime
from m1lib.db import migrate
from m1lib.errors import UnavailableError

router = APIRouter(tags=["health"], route_class=BodyRoute)


@router.get("/health/live", summary="The process answers; touches no dependency")
async def live() -> dict[str, str]:
    return {"status": "live"}


def readiness_checks(runtime: ReplicaRuntime) -> dict[str, dict[str, Any]]:
    """Every condition for deciding correctly; later parts (revocation state) add theirs here."""
    checks: dict[str, dict[str, Any]] = {}
    try:
        current = migrate.current_revision(runtime.db)
        head = migrate.head_revision()
        checks["database"] = {"ok": True}
        checks["migrations"] = {
            "ok": current == head,
            "detail": f"at {current or 'nothing'}, code expects {head}",
        }
    except UnavailableError as error:
        checks["database"] = {"ok": False, "detail": str(error)}
        checks["migrations"] = {"ok": False, "detail": "unknown: database unreachable"}
    checks["revocation"] = {
        "ok": runtime.revocations.ready,
        "detail": runtime.revocations.status().detail(),
    }
    checks["cache"] = {"ok": True, "detail": f"backend {runtime.cache.backend}"}
    return checks


@router.get(
    "/health/ready",
    summary="Can this replica decide correctly",
    responses=problems(503, why={503: "Not ready; the problem's `checks` say which failed."}),
)
def ready(request: Request) -> JSONResponse:
    runtime: ReplicaRuntime = request.app.state.runtime
    checks = readiness_checks(runtime)
    failing = sorted(name for name, check in checks.items() if not check["ok"])
    if failing:
        return problem(
            503,
            f"not ready: {', '.join(failing)}",
            headers={"Retry-After": "2"},
            checks=checks,
        )
    return JSONResponse({"status": "ready", "checks": checks})
