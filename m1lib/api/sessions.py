"""Browser sessions: an HttpOnly, SameSite=Strict cookie naming a credential, signed by the server.

The cookie holds the credential name, a fingerprint of its key hash and an expiry, signed with
HMAC-SHA256 under a key derived from the signing secret. It never holds the key itself. A session
dies with its credential: revoking (or re-creating) the credential changes what the fingerprint
must match. Cookies are accepted on GET routes, and on a POST only where the route opts in and the
request proves it comes from M1's own page (``m1lib.api.deps.check_session_post``), so no
cross-site form can revoke or query.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass

from pydantic import SecretStr

COOKIE_NAME = "m1_session"
_LABEL = b"m1 session cookie v1"


@dataclass(frozen=True)
class SessionClaims:
    name: str
    fingerprint: str
    expires_at: int


def session_key(signing_secret: SecretStr) -> bytes:
    """A key for cookies only, derived from the signing secret (no token and cookie share a key)."""
    return hmac.new(signing_secret.get_secret_value().encode(), _LABEL, hashlib.sha256).digest()


def fingerprint(key_hash: str) -> str:
    return key_hash[:16]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def encode_session(key: bytes, claims: SessionClaims) -> str:
    payload = _b64(
        json.dumps(
            {"n": claims.name, "f": claims.fingerprint, "e": claims.expires_at},
            separators=(",", ":"),
        ).encode()
    )
    signature = _b64(hmac.new(key, payload.encode(), hashlib.sha256).digest())
    return f"{payload}.{signature}"


def decode_session(key: bytes, cookie: str, *, now: float | None = None) -> SessionClaims | None:
    """The claims of a valid, unexpired cookie; None for anything else (no reason leaks out)."""
    if len(cookie) > 1024 or cookie.count(".") != 1:
        return None
    payload, signature = cookie.split(".")
    expected = _b64(hmac.new(key, payload.encode(), hashlib.sha256).digest())
    if not hmac.compare_digest(expected, signature):
        return None
    try:
        data = json.loads(_unb64(payload))
        claims = SessionClaims(str(data["n"]), str(data["f"]), int(data["e"]))
    except (ValueError, KeyError, TypeError):
        return None
    if claims.expires_at <= (time.time() if now is None else now):
        return None
    return claims
