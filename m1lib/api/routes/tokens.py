"""Token routes: issue, revoke (RFC 7009), revoke-all, introspect (RFC 7662), revocation list and
status.

The actor of every change is the authenticated credential's name, never a field of the request.
Revoke and introspect take form-encoded or JSON bodies, as their RFCs' clients send either; the
body is parsed here (no multipart dependency) and validated by the same pydantic models either
way, so a bad field is the usual 422 problem naming it. Handlers that touch the database are
plain ``def`` (FastAPI runs them in its thread pool); only body reading is async.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, TypeVar
from urllib.parse import parse_qsl

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    StringConstraints,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError
from starlette.exceptions import HTTPException

from m1lib.api.bodies import BodyRoute, decode_utf8, invalid_body, is_json_media_type, media_type
from m1lib.api.deps import (
    IntrospectPrincipal,
    IssueTokensPrincipal,
    RevokeTokensPrincipal,
    ViewerPrincipal,
    runtime_of,
)
from m1lib.api.openapi import AUTHENTICATED, problems
from m1lib.api.problems import problem
from m1lib.errors import InputError, TokenRejectedError, UnavailableError
from m1lib.policy import PolicyEngine
from m1lib.revocation import RevocationManager
from m1lib.text import (
    NAME_CHECK,
    NAME_SCHEMA,
    JtiText,
    ReasonText,
    SchemaPattern,
    SubjectText,
    ToolText,
)
from m1lib.vocabulary import Scope

__all__ = ["router"]

logger = logging.getLogger("m1.api.tokens")

router = APIRouter(prefix="/api/m1/tokens", tags=["tokens"], route_class=BodyRoute)

M = TypeVar("M", bound=BaseModel)
# A token is text, not stored; its size is M1_TOKEN_MAX_BYTES' business (an oversized one is
# simply not valid), this only bounds what a request may carry.
TokenText = Annotated[str, StringConstraints(min_length=1, max_length=16384)]
HintText = Annotated[str, StringConstraints(min_length=1, max_length=64), NAME_CHECK, NAME_SCHEMA]
CURSOR_PATTERN = "^[A-Za-z0-9_-]+$"  # base64url without padding, as the listing hands it out
# RFC 3339 with a year M1 can add a token lifetime to: 1970-8999. The zone is checked apart, so a
# time without one is told it needs one.
_TIME_PATTERN = (
    r"^(19[7-9][0-9]|[2-8][0-9]{3})-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?"
    r"([Zz]|[+-][0-9]{2}:?[0-9]{2})?$"
)
_TIME_RULE = "an RFC 3339 date-time with a zone, years 1970-8999"
_FORM = "application/x-www-form-urlencoded"
_FORM_FIELDS = 20  # parameters a form may carry; each one once (RFC 6749 section 3.2)
_FORM_RULE = f"UTF-8 form of at most {_FORM_FIELDS} parameters, each given once"
_NO_STORE = {"Cache-Control": "no-store"}
_TTL_MAX_S = 86400  # M1_TOKEN_TTL_S's own upper bound; the configured value is checked at issue
# The policy engine names its inputs as Python does; the answer names the body's members.
_ISSUE_FIELDS = {"tool_name": "/toolName", "scope": "/scope", "subject": "/subject", "ttl": "/ttlS"}


# -- bodies ------------------------------------------------------------------------------------------


def _time_text(value: Any) -> Any:
    """Only text in the documented form becomes a time: pydantic alone would take ``0.5`` as a
    Unix time, and a year such as 9999 overflows once a token lifetime is added."""
    if not isinstance(value, str) or not re.fullmatch(_TIME_PATTERN, value):
        raise PydanticCustomError("time", "not a time M1 takes", {"expected": _TIME_RULE})
    return value


TimeText = Annotated[datetime, BeforeValidator(_time_text), SchemaPattern(_TIME_PATTERN)]


def _one_of_required(*names: str) -> dict[str, Any]:
    """JSON schema: at least one of ``names`` is given, as text (null counts as not given)."""
    return {
        "anyOf": [{"required": [name], "properties": {name: {"type": "string"}}} for name in names]
    }


class RevokeRequest(BaseModel):
    """RFC 7009 revocation: the token itself, or (M1's extension) only its jti."""

    model_config = ConfigDict(extra="ignore", json_schema_extra=_one_of_required("token", "jti"))

    token: TokenText | None = Field(None, description="The token to revoke (RFC 7009).")
    jti: JtiText | None = Field(None, description="The jti to revoke, when the token is gone.")
    reason: ReasonText = Field("", description="Why; kept in the record and the audit.")
    token_type_hint: HintText | None = Field(None, description="Accepted and ignored (RFC 7009).")

    @model_validator(mode="after")
    def _token_or_jti(self) -> RevokeRequest:
        if self.token is None and self.jti is None:
            raise ValueError("give `token` or `jti`")
        return self


class RevokeAllRequest(BaseModel):
    """A not-before rule: deny every token for a tool and/or subject issued before a time."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra=_one_of_required("toolName", "subject")
    )

    tool_name: ToolText | None = Field(
        None,
        alias="toolName",
        description="The tool whose tokens are denied; omit for every tool of the subject.",
    )
    subject: SubjectText | None = Field(
        None, description="The subject (`sub`) whose tokens are denied; omit for every subject."
    )
    issued_before: TimeText | None = Field(
        None,
        alias="issuedBefore",
        description=f"Deny tokens issued before this time ({_TIME_RULE}); default now.",
    )
    reason: ReasonText = Field("", description="Why; kept in the rule and the audit.")

    @model_validator(mode="after")
    def _tool_or_subject(self) -> RevokeAllRequest:
        if self.tool_name is None and self.subject is None:
            raise ValueError("give `toolName`, `subject` or both")
        if self.issued_before is not None and self.issued_before.tzinfo is None:
            raise ValueError("`issuedBefore` needs a time zone (e.g. 2026-01-01T00:00:00Z)")
        return self


class IntrospectRequest(BaseModel):
    """RFC 7662 introspection request."""

    model_config = ConfigDict(extra="ignore")

    token: TokenText = Field(..., description="The token to inspect.")
    token_type_hint: HintText | None = Field(None, description="Accepted and ignored (RFC 7662).")


class IssueRequest(BaseModel):
    """A capability token for ``subject`` to call ``toolName`` up to ``scope``."""

    model_config = ConfigDict(extra="forbid")

    tool_name: ToolText = Field(alias="toolName", description="A tool of the registry.")
    scope: Scope = Field(description="The approval: at least the tool's own scope.")
    subject: SubjectText = Field(description="Who may use the token (its `sub`).")
    ttl_s: Annotated[int, Strict()] | None = Field(
        None,
        alias="ttlS",
        ge=1,
        le=_TTL_MAX_S,
        description="Lifetime in seconds; default and at most `M1_TOKEN_TTL_S`.",
    )


def _body_schema(model: type[BaseModel]) -> dict[str, Any]:
    """Both encodings of the body; in a form every parameter is one string, given once."""
    schema = model.model_json_schema()
    form = {**schema, "maxProperties": _FORM_FIELDS, "properties": {}}
    for name, member in schema.get("properties", {}).items():  # a form has no null: omit it
        choices = [choice for choice in member.get("anyOf", ()) if choice != {"type": "null"}]
        form["properties"][name] = (
            {**{k: v for k, v in member.items() if k != "anyOf"}, **choices[0]}
            if len(choices) == 1
            else member
        )
    if form.get("additionalProperties") is not False:
        form["additionalProperties"] = {"type": "string"}
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": schema}, _FORM: {"schema": form}},
        }
    }


async def _read_body(request: Request) -> dict[str, Any]:
    """The body as a flat mapping, from JSON or from a form (the two encodings RFC clients use);
    the route class has bounded its size (413) and checked JSON already (422 naming where)."""
    raw = await request.body()
    kind = media_type(request)
    if kind == _FORM:
        try:
            pairs = parse_qsl(decode_utf8(raw), keep_blank_values=True, max_num_fields=_FORM_FIELDS)
        except ValueError as error:
            raise invalid_body(f"not a form body: {error}", allowed=[_FORM_RULE]) from None
        names = [name for name, _ in pairs]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:  # RFC 6749 section 3.2: parameters must not be included more than once
            raise invalid_body("given more than once", f"/{repeated[0]}", allowed=[_FORM_RULE])
        return dict(pairs)
    if kind == "" or is_json_media_type(kind):
        data = await request.json() if raw else {}
        if not isinstance(data, dict):
            raise invalid_body("the body must be a JSON object")
        return data
    raise HTTPException(
        415, f"content type {kind!r} is not accepted; allowed: application/json, {_FORM}"
    )


def _validate(model: type[M], data: dict[str, Any]) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as error:
        errors = [
            {
                **item,
                "loc": ("body", *item["loc"]),
                "msg": item["msg"].removeprefix("Value error, "),
            }
            for item in error.errors(include_url=False)
        ]
        raise RequestValidationError(errors) from None


async def _revoke_body(request: Request) -> RevokeRequest:
    return _validate(RevokeRequest, await _read_body(request))


async def _revoke_all_body(request: Request) -> RevokeAllRequest:
    return _validate(RevokeAllRequest, await _read_body(request))


async def _introspect_body(request: Request) -> IntrospectRequest:
    return _validate(IntrospectRequest, await _read_body(request))


# -- tokens: the one place that asks the policy engine to read a token -----------------------------


def _policy(request: Request) -> PolicyEngine:
    policy: PolicyEngine | None = runtime_of(request).policy
    if policy is None:
        raise UnavailableError(
            "tokens cannot be read: no signing key (set M1_JWT_SECRET or run `m1 up` once)",
            retry_after_s=60,
        )
    return policy


def read_token(request: Request, token: str) -> Mapping[str, Any] | None:
    """The claims of a token this deployment signed, checked as every verify checks them (size,
    type, key, signature, times, issuer, audience, claim shapes) but for no particular tool or
    scope; None when it is not valid. Revocation is the caller's question."""
    try:
        return _policy(request).codec.decode(token)
    except TokenRejectedError:
        return None


def _manager(request: Request) -> RevocationManager:
    manager: RevocationManager = runtime_of(request).revocations
    return manager


# -- routes ------------------------------------------------------------------------------------------


@router.post(
    "",
    status_code=201,
    summary="Issue a capability token (as `issue_token` does), for approvers outside Python",
    responses=problems(
        *AUTHENTICATED,
        413,
        422,
        why={
            422: "The body does not validate, or the policy refuses it: a tool not in the "
            "registry, a scope below the tool's, a `ttlS` over `M1_TOKEN_TTL_S`, a subject that "
            "makes the token longer than `M1_TOKEN_MAX_BYTES`; `errors` names the member.",
            503: "No signing key, or the credentials are unavailable.",
        },
    ),
)
def issue(request: Request, principal: IssueTokensPrincipal, body: IssueRequest) -> JSONResponse:
    policy = _policy(request)
    ttl = None if body.ttl_s is None else timedelta(seconds=body.ttl_s)
    try:
        token = policy.issue_token(body.tool_name, body.scope, subject=body.subject, ttl=ttl)
    except InputError as error:
        return problem(
            422,
            "the policy does not issue this token",
            errors=[
                {
                    "path": _ISSUE_FIELDS.get(error.path, error.path),
                    "problem": error.problem,
                    **({"allowed": error.allowed} if error.allowed else {}),
                }
            ],
        )
    claims = policy.codec.decode(token)
    logger.info(
        "token %s issued by %s: %s at %s for %s",
        claims["jti"],
        principal.name,
        body.tool_name,
        body.scope.value,
        body.subject,
    )
    return JSONResponse(
        {
            "token": token,
            "jti": claims["jti"],
            "toolName": claims["toolName"],
            "scope": claims["scope"],
            "subject": claims["sub"],
            "issuedAt": datetime.fromtimestamp(claims["iat"], UTC).isoformat(),
            "expiresAt": datetime.fromtimestamp(claims["exp"], UTC).isoformat(),
            "expiresIn": claims["exp"] - claims["iat"],
        },
        status_code=201,
        headers=_NO_STORE,
    )


@router.post(
    "/revoke",
    summary="Revoke a token (RFC 7009), by the token or its jti; repeating it is harmless",
    openapi_extra=_body_schema(RevokeRequest),
    responses=problems(
        *AUTHENTICATED,
        400,
        413,
        415,
        422,
        why={
            400: "`jti` is not the token's jti.",
            503: "The database is unavailable: nothing was revoked.",
        },
    ),
)
def revoke(
    request: Request,
    principal: RevokeTokensPrincipal,
    body: Annotated[RevokeRequest, Depends(_revoke_body)],
) -> JSONResponse:
    manager = _manager(request)
    tool_name: str | None = None
    subject: str | None = None
    expires_at: datetime | None = None
    jti = body.jti
    if body.token is not None:
        claims = read_token(request, body.token)
        if claims is None:
            # RFC 7009 section 2.2: an invalid token is not an error; there is nothing to revoke.
            return JSONResponse(
                {"revoked": False, "detail": "the token is not valid here: nothing to revoke"}
            )
        if jti is not None and jti != claims.get("jti"):
            raise InputError("jti", "does not match the token's jti", ["the token's jti, or omit"])
        jti = str(claims["jti"])
        tool_name = _text_claim(claims, "toolName")
        subject = _text_claim(claims, "sub")
        expires_at = _expiry(claims, manager.settings.token.leeway_s)
    assert jti is not None  # the model requires token or jti
    record = manager.revoke_token(
        jti,
        body.reason,
        principal.name,
        tool_name=tool_name,
        subject=subject,
        expires_at=expires_at,
    )
    return JSONResponse(
        {"revoked": True, "alreadyRevoked": not record.created, "record": record.to_json()}
    )


@router.post(
    "/revoke-all",
    summary="Deny every token for a tool and/or subject issued before a time",
    openapi_extra=_body_schema(RevokeAllRequest),
    responses=problems(
        *AUTHENTICATED,
        413,
        415,
        422,
        why={503: "The database is unavailable: no rule was stored."},
    ),
)
def revoke_all(
    request: Request,
    principal: RevokeTokensPrincipal,
    body: Annotated[RevokeAllRequest, Depends(_revoke_all_body)],
) -> JSONResponse:
    rule = _manager(request).revoke_all(
        tool_name=body.tool_name,
        subject=body.subject,
        issued_before=body.issued_before or datetime.now(UTC),
        reason=body.reason,
        revoked_by=principal.name,
    )
    return JSONResponse({"rule": rule.to_json()})


@router.post(
    "/introspect",
    summary="Is this token active (RFC 7662)? Inactive tokens get only {active: false}",
    openapi_extra=_body_schema(IntrospectRequest),
    responses=problems(
        *AUTHENTICATED,
        413,
        415,
        422,
        why={503: "No signing key, or the credentials are unavailable."},
    ),
)
def introspect(
    request: Request,
    _principal: IntrospectPrincipal,
    body: Annotated[IntrospectRequest, Depends(_introspect_body)],
) -> JSONResponse:
    return JSONResponse(_policy(request).introspect(body.token).to_json(), headers=_NO_STORE)


@router.get(
    "/revocations",
    summary="Revoked tokens, newest first, with cursor paging",
    responses=problems(
        *AUTHENTICATED, 400, 422, why={400: "`cursor` is not one this listing handed out."}
    ),
)
def revocations(
    request: Request,
    _principal: ViewerPrincipal,
    tool_name: Annotated[
        ToolText | None, Query(alias="toolName", description="Only this tool.")
    ] = None,
    cursor: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=200,
            pattern=CURSOR_PATTERN,
            description="`nextCursor` of the previous page.",
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="Records per page.")] = 100,
) -> dict[str, Any]:
    page = _manager(request).get_revocation_list(tool_name, cursor=cursor, limit=limit)
    return {"items": [record.to_json() for record in page.items], "nextCursor": page.next_cursor}


@router.get(
    "/{jti:path}/status",
    summary="Whether a jti is revoked, in the database and on this replica",
    responses=problems(*AUTHENTICATED, 422),
)
def status(
    request: Request,
    _principal: ViewerPrincipal,
    jti: Annotated[JtiText, Path(description="The jti (a token's `jti` claim).")],
) -> dict[str, Any]:
    manager = _manager(request)
    record = manager.get_record(jti)
    return {
        "jti": jti,
        "revoked": record is not None,
        "enforcedHere": manager.is_revoked(jti),
        "record": None if record is None else record.to_json(),
    }


def _text_claim(claims: Mapping[str, Any], name: str) -> str | None:
    value = claims.get(name)
    return value if isinstance(value, str) else None


def _expiry(claims: Mapping[str, Any], leeway_s: int) -> datetime | None:
    """When the record may go: the token's ``exp`` plus the leeway it is accepted with."""
    exp = claims.get("exp")
    if not isinstance(exp, int | float) or isinstance(exp, bool):
        return None
    return datetime.fromtimestamp(exp + leeway_s, UTC)
