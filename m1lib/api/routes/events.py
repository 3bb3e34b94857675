"""Event ingest over HTTP: a JSON array of events into this replica's metrics runtime.

For a process that is not an API replica and has no Redis (a flow run elsewhere, a service in
another language): it posts what it recorded, and the replica records it as ``record_events``
would, so the events reach the shared stream, the store and every query.

All or nothing: the whole batch is validated before any event is queued (``record_events``
does that), and one bad event refuses the whole batch with a 422 whose ``errors`` name the index
and field of each bad event (``/3/toolName``), at most :data:`MAX_ERRORS` of them, so a client
can fix and resend the batch without wondering which part landed. The validation is the
recorder's own (``m1lib.metrics.schema``); this module adds only the boundary's text rule (no
NUL, surrogate or control character but tab and line breaks in a string, as ``m1lib.text``
says) and, on a refusal, a walk that finds every bad event instead of the first.

The body is bounded by ``M1_EVENTS_INGEST_MAX_BYTES`` (413 before it is read past that) and
``M1_EVENTS_INGEST_MAX_EVENTS`` (413); requests count against ``M1_RATELIMIT_INGEST_PER_MIN``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from m1lib.api.bodies import BodyRoute, invalid_body, is_json_media_type, media_type
from m1lib.api.deps import RecordEventsPrincipal, runtime_of
from m1lib.api.openapi import AUTHENTICATED, problems
from m1lib.api.problems import problem
from m1lib.api.routes.dashboard import metrics_of
from m1lib.errors import InputError
from m1lib.metrics.schema import (
    MAX_TEXT,
    METRICS,
    TIMESTAMP_LIMIT_S,
    Kind,
    MetricSpec,
    metric_spec,
    timestamp_us,
)
from m1lib.text import PROSE_PATTERN, PROSE_RULE, text_problem

__all__ = ["MAX_ERRORS", "router"]

MAX_ERRORS: Final = 100  # errors listed in one 422; the detail counts every bad event
_EVENTS_RULE: Final = 'a JSON array of events: {"metric": ..., "timestamp"?: ..., ...fields}'
_RECORDED_PATH: Final = re.compile(r"^events\[(\d+)\]\.?(.*)$")  # record_events' InputError path
# Where the body could hold a character prose may not (m1lib.text): an escape of one (``\u0000``,
# ``\b``, ``\f``), or one raw (C0 outside strings, DEL, C1 as UTF-8). A match sends the batch
# through the exact per-string check; most batches do not match and skip that walk (a false
# match, such as an escaped backslash before a ``b``, costs only the walk).
_MAYBE_BAD_TEXT: Final = re.compile(
    rb"\\(?:[bf]|u00(?:0[0-8bcefBCEF]|1[0-9a-fA-F]|7[fF]|[89][0-9a-fA-F]))"
    rb"|[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]|\xc2[\x80-\x9f]"
)


@dataclass(frozen=True)
class _Body:
    events: list[Any]
    maybe_bad_text: bool  # False: no string of the body can break the text rule


class IngestRoute(BodyRoute):
    """Bodies bounded by the replica's ``M1_EVENTS_INGEST_MAX_BYTES`` rather than a constant."""

    def body_limit(self, request: Request) -> int:
        return int(runtime_of(request).settings.events.ingest_max_bytes)


router = APIRouter(prefix="/api/m1/events", tags=["events"], route_class=IngestRoute)


# -- the documented body: one schema per metric, from the metrics' own specs --------------------


def _field_schema(kind: Kind, choices: tuple[str, ...] | None, limit: float | None) -> Any:
    if kind is Kind.STR:
        if choices:
            return {"type": "string", "enum": list(choices)}
        return {"type": "string", "maxLength": MAX_TEXT, "pattern": PROSE_PATTERN}
    if kind is Kind.BOOL:
        return {"type": "boolean"}
    assert limit is not None
    bound = int(limit)
    return {
        "type": "integer" if kind is Kind.INT else "number",
        "minimum": -bound,
        "maximum": bound,
    }


def _metric_schema(spec: MetricSpec) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "metric": {"type": "string", "const": spec.name},
        "timestamp": {
            "anyOf": [
                {"type": "number", "minimum": 0, "exclusiveMaximum": TIMESTAMP_LIMIT_S},
                {"type": "null"},
            ],
            "description": "Epoch seconds; omitted or null: when the replica records it.",
        },
    }
    for f in spec.declared:
        member = _field_schema(f.kind, f.choices, f.limit)
        properties[f.name] = {"anyOf": [member, {"type": "null"}]} if f.optional else member
    return {
        "type": "object",
        "title": spec.name,
        "description": spec.description,
        "properties": properties,
        "required": ["metric", *(f.name for f in spec.declared if not f.optional)],
        "additionalProperties": False,
    }


def _body_schema() -> dict[str, Any]:
    events = {
        "type": "array",
        "description": "At most `M1_EVENTS_INGEST_MAX_EVENTS` events (413 past it); "
        "all are recorded or none.",
        "items": {"oneOf": [_metric_schema(spec) for spec in METRICS.values()]},
    }
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": events}}}}


# -- reading and checking ----------------------------------------------------------------------


async def _events_body(request: Request) -> _Body:
    """The JSON array of the body; the route class has bounded its size and parsed it strictly."""
    kind = media_type(request)
    if kind and not is_json_media_type(kind):
        raise HTTPException(
            415, f"content type {kind!r} is not accepted; allowed: application/json"
        )
    raw = await request.body()
    data = await request.json() if raw else None
    if not isinstance(data, list):
        raise invalid_body("the body must be a JSON array of events", allowed=[_EVENTS_RULE])
    limit = runtime_of(request).settings.events.ingest_max_events
    if len(data) > limit:
        raise HTTPException(
            413,
            f"the body holds {len(data)} events; allowed: at most {limit} per request "
            "(M1_EVENTS_INGEST_MAX_EVENTS)",
        )
    return _Body(data, _MAYBE_BAD_TEXT.search(raw) is not None)


def _pointer(index: int, member: str = "") -> str:
    escaped = member.replace("~", "~0").replace("/", "~1")
    return f"/{index}/{escaped}" if member else f"/{index}"


def _error(path: str, problem_text: str, allowed: list[str]) -> dict[str, Any]:
    entry: dict[str, Any] = {"path": path, "problem": problem_text}
    if allowed:
        entry["allowed"] = allowed
    return entry


def _text_error(index: int, event: Mapping[str, Any]) -> dict[str, Any] | None:
    """The boundary's text rule on the strings of one event (the metrics take any text)."""
    for name, value in event.items():
        if isinstance(value, str):
            found = text_problem(value, prose=True)
            if found is not None:
                return _error(_pointer(index, str(name)), found, [PROSE_RULE])
    return None


def _event_error(index: int, event: Any) -> dict[str, Any] | None:
    """What is wrong with one event, as the recorder's per-event path checks it (its functions)."""
    if not isinstance(event, dict):
        return _error(_pointer(index), f"is {type(event).__name__}", ["an object"])
    found = _text_error(index, event)
    if found is not None:
        return found
    try:
        spec = metric_spec(event.get("metric"), ".metric")
        stamp = event.get("timestamp")
        extra = 1 if stamp is None and "timestamp" not in event else 2
        spec.validator()(event, extra, "")
        if stamp is not None:
            timestamp_us(stamp, ".timestamp")
    except InputError as error:
        return _error(_pointer(index, error.path.removeprefix(".")), error.problem, error.allowed)
    return None


def _from_recorder(error: InputError) -> dict[str, Any]:
    """``record_events``' own error (``events[3].toolName``) as a pointer, should the walk above
    have found nothing: the refusal then still names the event."""
    matched = _RECORDED_PATH.match(error.path)
    path = _pointer(int(matched.group(1)), matched.group(2)) if matched else "/"
    return _error(path, error.problem, error.allowed)


def _refusal(events: list[Any], errors: list[dict[str, Any]]) -> JSONResponse:
    shown = errors[:MAX_ERRORS]
    more = f"; the first {MAX_ERRORS} are listed" if len(errors) > MAX_ERRORS else ""
    return problem(
        422,
        f"{len(errors)} of {len(events)} events are invalid, so none was recorded{more}",
        errors=shown,
    )


# -- the route ---------------------------------------------------------------------------------


@router.post(
    "",
    status_code=202,
    summary="Record a batch of events (all or none) into this replica's event store",
    openapi_extra=_body_schema(),
    responses=problems(
        *AUTHENTICATED,
        413,
        415,
        422,
        why={
            413: "The body is over `M1_EVENTS_INGEST_MAX_BYTES`, or holds more than "
            "`M1_EVENTS_INGEST_MAX_EVENTS` events.",
            422: "The body is no JSON array, or an event does not validate: nothing was "
            f"recorded, and `errors` names each bad event's index and field (`/3/toolName`; at "
            f"most {MAX_ERRORS}).",
            503: "The event store is not running here, or the credentials are unavailable.",
        },
    ),
)
def ingest(
    request: Request,
    _principal: RecordEventsPrincipal,
    body: Annotated[_Body, Depends(_events_body)],
) -> JSONResponse:
    """Validate every event, then queue them all (a plain ``def``: validation is CPU work, so
    it runs on FastAPI's thread pool, not the event loop)."""
    metrics = metrics_of(request)
    events = body.events
    text_errors = body.maybe_bad_text and [
        found
        for index, event in enumerate(events)
        if isinstance(event, dict) and (found := _text_error(index, event)) is not None
    ]
    if text_errors:
        errors = [e for i, event in enumerate(events) if (e := _event_error(i, event)) is not None]
        return _refusal(events, errors)
    try:
        accepted = metrics.record_events(events)  # validates all before it queues any
    except InputError as first:
        errors = [e for i, event in enumerate(events) if (e := _event_error(i, event)) is not None]
        return _refusal(events, errors or [_from_recorder(first)])
    # A full queue (the store far behind) drops the excess and counts it, as every recorder does.
    return JSONResponse({"accepted": accepted, "dropped": len(events) - accepted}, status_code=202)
