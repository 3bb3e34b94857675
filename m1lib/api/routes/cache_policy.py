"""The cache TTL policy over HTTP: read it (viewer), set or reset a tool's rule (admin).

A write is checked like ``m1 cache policy set`` (InputError naming the field and the allowed
range: a 400), logged in the change log with the credential as actor, and followed by the
``cache.policy.reload`` command, so every replica applies it at once.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from pydantic import BaseModel, ConfigDict, Field

from m1lib.api.bodies import BodyRoute
from m1lib.api.deps import AdminPrincipal, ViewerPrincipal, runtime_of
from m1lib.api.openapi import AUTHENTICATED, problems
from m1lib.ops.cost import policy_store
from m1lib.ops.cost.policy import MAX_TTL_S, ToolTtl
from m1lib.text import ToolText

router = APIRouter(prefix="/api/m1", tags=["operations"], route_class=BodyRoute)

ToolPath = Annotated[ToolText, Path(description="The tool whose `cached_call`s the rule covers.")]
_Seconds = Annotated[float, Field(gt=0, le=MAX_TTL_S)]


class RuleRequest(BaseModel):
    """One tool's rule; the budget bounds every TTL (each plus the stale window)."""

    model_config = ConfigDict(extra="forbid")

    ttl_s: _Seconds = Field(description="TTL in s, at most the staleness budget.")
    staleness_budget_s: _Seconds = Field(description="Largest age of a value served, in s.")
    peak_hours: (
        tuple[Annotated[int, Field(ge=0, le=23)], Annotated[int, Field(ge=0, le=23)]] | None
    ) = Field(
        None, description="[start, end) UTC hours where `peak_ttl_s` applies (may wrap midnight)."
    )
    peak_ttl_s: _Seconds | None = Field(None, description="TTL in s inside the peak hours.")
    offpeak_ttl_s: _Seconds | None = Field(None, description="TTL in s outside them.")
    stale_while_revalidate_s: float = Field(
        0.0,
        ge=0,
        le=MAX_TTL_S,
        description="Serve an expired value this long while one refresh runs.",
    )


@router.get(
    "/cache/policy",
    summary="The cache TTL policy, recent changes, and the change rates this replica observed",
    responses=problems(*AUTHENTICATED),
)
def show_policy(request: Request, _principal: ViewerPrincipal) -> dict[str, Any]:
    runtime = runtime_of(request)
    refresher = runtime.cache_policy
    observed = {} if refresher is None else refresher.counters.rates()
    return {
        "defaultTtlS": runtime.settings.cache.default_ttl_s,
        "tools": [rule.to_json() for rule in policy_store.load_policy(runtime.db).values()],
        "changes": [change.to_json() for change in policy_store.list_changes(runtime.db, limit=20)],
        "observed": {tool: rate.to_json() for tool, rate in observed.items()},
        "loadedVersion": None if refresher is None else refresher.snapshot.version,
    }


@router.put(
    "/cache/policy/{tool}",
    summary="Set one tool's TTL rule; every replica follows at once",
    responses=problems(*AUTHENTICATED, 400, 413, 422),
)
def set_rule(
    request: Request, tool: ToolPath, body: RuleRequest, principal: AdminPrincipal
) -> dict[str, Any]:
    runtime = runtime_of(request)
    rule = ToolTtl(tool=tool, **body.model_dump())
    stored = policy_store.set_tool(runtime.db, runtime.settings, rule, actor=principal.name)
    return stored.to_json()


@router.delete(
    "/cache/policy/{tool}",
    summary="Remove one tool's TTL rule (back to the default TTL)",
    responses=problems(*AUTHENTICATED, 422),
)
def reset_rule(request: Request, tool: ToolPath, principal: AdminPrincipal) -> dict[str, Any]:
    runtime = runtime_of(request)
    removed = policy_store.reset_tool(runtime.db, runtime.settings, tool, actor=principal.name)
    return {"tool": tool, "removed": removed}
