"""Request dependencies: who is calling, may they, and are they within their limits.

Routes declare the permission they need (``m1lib.auth.PERMISSIONS`` says which roles hold it) with
the aliases ``ViewerPrincipal`` (read), ``IntrospectPrincipal``, ``RecordEventsPrincipal``,
``IssueTokensPrincipal``, ``RevokeTokensPrincipal`` and ``AdminPrincipal`` (or
``dependencies=[...]`` where a router is included); tests swap the ``require_*`` functions
(:data:`REQUIRE`, one per permission) through ``app.dependency_overrides``. The permission also
picks the rate-limit class: ``ingest`` for recording events, ``admin`` for issuing, revoking and
administering, else ``read`` (GET, HEAD) or ``query``. A key arrives only in the
``Authorization: Bearer`` header. The session cookie counts on GET and HEAD, and on a POST only
where the endpoint opted in with :func:`accepts_session_post` (the dashboard's query box) and the
request proves it comes from M1's own page (:func:`check_session_post`): a cross-site form can
neither send the custom header nor fake its Origin, so the cookie cannot be used against the
browser's owner (CSRF).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Final, TypeVar

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from m1lib.api.replica import ReplicaRuntime
from m1lib.api.sessions import COOKIE_NAME, decode_session, fingerprint
from m1lib.auth import Permission, Role, roles_with
from m1lib.errors import AuthenticationError, PermissionDeniedError, RateLimitedError

SAFE_METHODS = frozenset({"GET", "HEAD"})
SESSION_POST_HEADER = "X-M1-Dashboard"
"""The header (value ``1``) a POST must carry for the session cookie to count on it."""
_SESSION_POST_MARK = "__m1_accepts_session_post__"
F = TypeVar("F", bound=Callable[..., Any])


def accepts_session_post(endpoint: F) -> F:
    """Let the session cookie authenticate POSTs to this endpoint (with the CSRF checks)."""
    setattr(endpoint, _SESSION_POST_MARK, True)
    return endpoint


def _opted_in(request: Request) -> bool:
    return bool(getattr(request.scope.get("endpoint"), _SESSION_POST_MARK, False))


def _origin_host(origin: str) -> str:
    """``host[:port]`` of an Origin header (``null`` and garbage give an empty string)."""
    scheme, sep, rest = origin.partition("://")
    return rest.lower() if sep and scheme.lower() in ("http", "https") and "/" not in rest else ""


def check_session_post(request: Request) -> None:
    """Refuse a cookie-authenticated POST that a page of another site could have sent.

    Only M1's page sends ``X-M1-Dashboard: 1`` (a cross-site form cannot set a header, and a
    cross-site ``fetch`` with one needs a CORS preflight that M1 never allows for it). An
    ``Origin`` header, when the browser sends one, must name this request's own ``Host``; the
    scheme is not compared, so the check holds behind a proxy that terminates TLS (one host and
    port never serve two schemes directly).
    """
    if request.headers.get(SESSION_POST_HEADER) != "1":
        raise AuthenticationError(
            f"the session cookie counts on this POST only with the header {SESSION_POST_HEADER}: 1 "
            "(sent by M1's dashboard page, never by a form of another site); "
            "or use Authorization: Bearer <key>"
        )
    origin = request.headers.get("origin")
    host = (request.headers.get("host") or "").lower()
    if origin is not None and (not host or _origin_host(origin) != host):
        raise PermissionDeniedError(
            f"Origin {origin[:200]!r} is not this server's own ({host[:200]!r}): "
            "the session cookie is refused on cross-site requests"
        )
    if request.headers.get("sec-fetch-site") not in (None, "same-origin", "none"):
        raise PermissionDeniedError(
            "Sec-Fetch-Site says this request came from another site: "
            "the session cookie is refused on cross-site requests"
        )


@dataclass(frozen=True)
class Principal:
    """The authenticated caller; ``name`` is the actor recorded in audits and incidents."""

    name: str
    role: Role
    via: str = "key"  # "key" or "session"


def runtime_of(request: Request) -> ReplicaRuntime:
    runtime: ReplicaRuntime = request.app.state.runtime
    return runtime


def client_address(request: Request) -> str:
    """The client's address: behind a trusted proxy (``M1_TRUSTED_PROXIES``) the one it
    forwarded, already put in the scope by :class:`m1lib.api.proxies.TrustedProxyMiddleware`."""
    return request.client.host if request.client else "unknown"


def enforce_limit(request: Request, route_class: str, who: str | None) -> None:
    """Count this request against the credential's and the address's limit for its class."""
    runtime = runtime_of(request)
    limit = int(getattr(runtime.settings.ratelimit, f"{route_class}_per_min"))
    buckets = [f"{route_class}:addr:{client_address(request)}"]
    if who is not None:
        buckets.append(f"{route_class}:cred:{who}")
    for bucket in buckets:
        verdict = runtime.limiter.hit(bucket, limit)
        if not verdict.allowed:
            scope = "credential" if ":cred:" in bucket else "client address"
            raise RateLimitedError(
                f"rate limit of {limit} {route_class} requests per minute per {scope} reached",
                retry_after_s=verdict.retry_after_s,
            )


def _from_header(request: Request, header: str) -> Principal:
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise AuthenticationError("Authorization: use the form `Bearer <API key>`")
    credential = runtime_of(request).credentials.authenticate(key.strip())
    if credential is None:
        enforce_limit(request, "login", None)  # slows down key guessing from one address
        raise AuthenticationError("Authorization: unknown or revoked API key")
    return Principal(credential.name, credential.role, "key")


def _from_cookie(request: Request, cookie: str) -> Principal | None:
    runtime = runtime_of(request)
    if runtime.session_key is None:
        return None
    claims = decode_session(runtime.session_key, cookie)
    if claims is None:
        return None
    credential = runtime.credentials.by_name(claims.name)
    if credential is None or fingerprint(credential.key_hash) != claims.fingerprint:
        return None
    return Principal(credential.name, credential.role, "session")


def session_principal(request: Request) -> Principal | None:
    """Who the request's session cookie names (any method; for pages, not for API routes)."""
    cookie = request.cookies.get(COOKIE_NAME)
    return _from_cookie(request, cookie) if cookie else None


def authenticate(request: Request) -> Principal | None:
    header = request.headers.get("authorization")
    if header:
        return _from_header(request, header)
    cookie = request.cookies.get(COOKIE_NAME)
    if not cookie:
        return None
    if request.method in SAFE_METHODS:
        return _from_cookie(request, cookie)
    if request.method == "POST" and _opted_in(request):
        principal = _from_cookie(request, cookie)
        if principal is not None:
            check_session_post(request)
        return principal
    return None


_ADMIN_CLASS: Final = frozenset(
    {Permission.ISSUE_TOKENS, Permission.REVOKE_TOKENS, Permission.ADMIN}
)


def limit_class(request: Request, needed: Permission) -> str:
    """The rate-limit class (``M1_RATELIMIT_<CLASS>_PER_MIN``) of a request needing ``needed``."""
    if needed is Permission.RECORD_EVENTS:
        return "ingest"
    if needed in _ADMIN_CLASS:
        return "admin"
    return "read" if request.method in SAFE_METHODS else "query"


def _require(request: Request, needed: Permission) -> Principal:
    principal = authenticate(request)
    holders = roles_with(needed)
    if principal is None:
        if holders == [Role.ADMIN] and not runtime_of(request).credentials.any_configured():
            raise PermissionDeniedError("no API credential is configured: admin routes are closed")
        hint = (
            " (the session cookie is accepted on GET only here)"
            if COOKIE_NAME in request.cookies and not _opted_in(request)
            else ""
        )
        raise AuthenticationError(f"this route needs an API key: Authorization: Bearer <key>{hint}")
    if not principal.role.allows(needed):
        values = [role.value for role in holders]
        names = " or ".join([", ".join(values[:-1]), values[-1]] if len(values) > 2 else values)
        raise PermissionDeniedError(
            f"this route needs the {needed.value} permission, which the {names} role has; "
            f"credential {principal.name!r} is {principal.role.value}"
        )
    enforce_limit(request, limit_class(request, needed), principal.name)
    request.state.principal = principal
    return principal


# Declared so OpenAPI documents the scheme (and Swagger UI's Authorize works); parsing is ours.
bearer_scheme = HTTPBearer(
    auto_error=False, scheme_name="M1 API key", description="`m1 keys create NAME --role ROLE`"
)
_Documented = Annotated[HTTPAuthorizationCredentials | None, Security(bearer_scheme)]


def require_viewer(request: Request, _: _Documented) -> Principal:
    """The ``read`` permission: dashboards, queries, listings (viewer, admin)."""
    return _require(request, Permission.READ)


def require_introspect_tokens(request: Request, _: _Documented) -> Principal:
    return _require(request, Permission.INTROSPECT_TOKENS)


def require_record_events(request: Request, _: _Documented) -> Principal:
    return _require(request, Permission.RECORD_EVENTS)


def require_issue_tokens(request: Request, _: _Documented) -> Principal:
    return _require(request, Permission.ISSUE_TOKENS)


def require_revoke_tokens(request: Request, _: _Documented) -> Principal:
    return _require(request, Permission.REVOKE_TOKENS)


def require_admin(request: Request, _: _Documented) -> Principal:
    return _require(request, Permission.ADMIN)


require_read = require_viewer
REQUIRE: Final[Mapping[Permission, Callable[[Request, _Documented], Principal]]] = {
    Permission.READ: require_viewer,
    Permission.INTROSPECT_TOKENS: require_introspect_tokens,
    Permission.RECORD_EVENTS: require_record_events,
    Permission.ISSUE_TOKENS: require_issue_tokens,
    Permission.REVOKE_TOKENS: require_revoke_tokens,
    Permission.ADMIN: require_admin,
}
"""The dependency of each permission (what a test overrides to skip authentication)."""

ViewerPrincipal = Annotated[Principal, Depends(require_viewer)]
IntrospectPrincipal = Annotated[Principal, Depends(require_introspect_tokens)]
RecordEventsPrincipal = Annotated[Principal, Depends(require_record_events)]
IssueTokensPrincipal = Annotated[Principal, Depends(require_issue_tokens)]
RevokeTokensPrincipal = Annotated[Principal, Depends(require_revoke_tokens)]
AdminPrincipal = Annotated[Principal, Depends(require_admin)]
