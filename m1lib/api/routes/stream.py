"""``GET /api/m1/dashboard/stream``: the live dashboard over Server-Sent Events.

Viewer credentials by header or session cookie (the role dependency is added where the router
is included). The replica's :class:`~m1lib.api.stream.StreamHub` does the work; this route only
reads the selection and ``Last-Event-ID`` and hands the client's queue to the response.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from starlette.responses import Response

from m1lib.api.openapi import AUTHENTICATED, problems
from m1lib.api.stream import EVENT_TYPES, EventStreamResponse, StreamHub, parse_types
from m1lib.errors import UnavailableError

router = APIRouter(prefix="/api/m1/dashboard", tags=["dashboard"])

_DESCRIPTION = (
    "Events `" + "`, `".join(EVENT_TYPES) + "` as in docs/contracts.md. Snapshot ids are the "
    "tick time in ms, alert ids `<µs>-<digest>`: the same on every replica, so `Last-Event-ID` "
    "resumes on any of them (missed alerts replayed, or `reset` when they are no longer kept)."
)

# One event as an SSE parser hands it over (OpenAPI 3.2's itemSchema, under `schema` for 3.1
# tools): `data` is the JSON envelope as text.
_EVENT_SCHEMA = {
    "type": "object",
    "properties": {
        "event": {"type": "string", "enum": list(EVENT_TYPES)},
        "id": {"type": "string", "pattern": "^[0-9]+(-[0-9a-f]+)?$"},
        "retry": {"type": "integer", "minimum": 0},
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "description": '{"type", "timestamp", "data"}: the payloads of docs/contracts.md.',
        },
    },
    "required": ["event", "data"],
}


def hub_of(request: Request) -> StreamHub:
    hub: StreamHub | None = getattr(request.app.state, "stream_hub", None)
    if hub is None:
        raise UnavailableError("the live stream is not running on this replica", retry_after_s=5)
    return hub


@router.get(
    "/stream",
    summary="Live dashboard figures and alerts (Server-Sent Events)",
    description=_DESCRIPTION,
    response_class=EventStreamResponse,
    status_code=200,
    responses={
        200: {
            "description": "An endless `text/event-stream`.",
            "content": {"text/event-stream": {"schema": _EVENT_SCHEMA}},
        },
        **problems(
            *AUTHENTICATED,
            400,
            422,
            why={
                400: "`types` names an unknown event type; `errors` lists the allowed ones.",
                503: "The replica serves M1_STREAM_MAX_CLIENTS streams already, or is shutting "
                "down, or the credentials are unavailable; retry after Retry-After.",
            },
        ),
    },
)
async def stream(
    request: Request,
    types: Annotated[
        str | None,
        Query(max_length=512, description="Comma-separated event types to receive; all if absent."),
    ] = None,
    last_event_id: Annotated[
        str | None,
        Header(alias="Last-Event-ID", max_length=256, description="Resume after this id."),
    ] = None,
    last_event_id_param: Annotated[
        str | None,
        Query(
            alias="lastEventId",
            max_length=256,
            description="Resume after this id when the client cannot send the header (a new "
            "EventSource opened by a page's own reconnect); the header wins when both are sent.",
        ),
    ] = None,
) -> Response:
    hub = hub_of(request)
    client = hub.connect(parse_types(types), last_event_id or last_event_id_param)
    return EventStreamResponse(hub, client)
