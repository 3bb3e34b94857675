"""Browser login: exchange an API key (in the body, never the URL) for a session cookie."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Body, Request, Response
from pydantic import BaseModel, Field, StringConstraints

from m1lib.api.bodies import BodyRoute
from m1lib.api.deps import enforce_limit, runtime_of
from m1lib.api.openapi import problems
from m1lib.api.sessions import COOKIE_NAME, SessionClaims, encode_session, fingerprint
from m1lib.errors import AuthenticationError, UnavailableError
from m1lib.text import NAME_CHECK, NAME_SCHEMA

router = APIRouter(prefix="/api/m1/session", tags=["session"], route_class=BodyRoute)


class Login(BaseModel):
    key: Annotated[
        str, StringConstraints(min_length=1, max_length=256), NAME_CHECK, NAME_SCHEMA
    ] = Field(description="A viewer or admin API key.")


class SessionInfo(BaseModel):
    name: str
    role: str
    expiresAt: int = Field(description="Unix time the cookie stops working.")  # noqa: N815


@router.post(
    "",
    summary="Log a browser in: sets an HttpOnly SameSite=Strict session cookie",
    responses=problems(
        401,
        413,
        422,
        429,
        503,
        why={
            401: "`key` is unknown or revoked.",
            429: "Too many logins from this client address.",
            503: "Sessions are off (no signing secret), or the credentials are unavailable.",
        },
    ),
)
def login(request: Request, response: Response, body: Annotated[Login, Body()]) -> SessionInfo:
    runtime = runtime_of(request)
    enforce_limit(request, "login", None)
    if runtime.session_key is None:
        raise UnavailableError(
            "sessions are off: no signing secret is configured", retry_after_s=60
        )
    credential = runtime.credentials.authenticate(body.key)
    if credential is None:
        raise AuthenticationError("key: unknown or revoked API key")
    ttl = runtime.settings.auth.session_ttl_s
    claims = SessionClaims(
        credential.name, fingerprint(credential.key_hash), int(time.time()) + ttl
    )
    response.set_cookie(
        COOKIE_NAME,
        encode_session(runtime.session_key, claims),
        max_age=ttl,
        httponly=True,
        samesite="strict",
        secure=runtime.settings.tls_enabled,
        path="/",
    )
    return SessionInfo(
        name=credential.name, role=credential.role.value, expiresAt=claims.expires_at
    )


@router.delete("", status_code=204, summary="Log out: clears the session cookie")
def logout(request: Request, response: Response) -> None:
    response.delete_cookie(
        COOKIE_NAME,
        httponly=True,
        samesite="strict",
        secure=runtime_of(request).settings.tls_enabled,
        path="/",
    )
