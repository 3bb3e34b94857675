"""Security (4 scenarios): routes refuse without credentials, a revoked token is denied end to
end, the CORS policy refuses a foreign origin, TLS is served with a certificate in date.

Probe tokens are issued for the marked tool ``m1_validation_probe`` (a built-in read tool that
guards nothing) to the subject ``m1-validation-probe`` with a 60 s lifetime, and revoked before the
suite ends; the purge-tokens flow removes their records once they have expired.
"""

from __future__ import annotations

import ssl
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from cryptography import x509

from m1lib.ops.validation.scenario import (
    PROBE_SOURCE,
    PROBE_TOOL,
    Context,
    Outcome,
    Scenario,
    Status,
    needs_key,
)
from m1lib.ops.validation.target import Profile

__all__ = ["SCENARIOS", "ProbeToken", "certificate_expiry", "issue_probe_token"]

PROBE_TTL_S: Final = 60
FOREIGN_ORIGIN: Final = "https://m1-validation.invalid"
# (method, path): one route per permission class a client without credentials must not reach
GUARDED: Final = [
    ("GET", "/api/m1/incidents"),
    ("POST", "/api/m1/dashboard/query"),
    ("POST", "/api/m1/tokens/introspect"),
    ("POST", "/api/m1/tokens"),
    ("POST", "/api/m1/tokens/revoke"),
]


@dataclass(frozen=True, slots=True)
class ProbeToken:
    token: str
    jti: str


def issue_probe_token(context: Context) -> ProbeToken:
    """A token for the probe tool, revoked when the context closes (idempotent if already)."""
    answer = context.api().post_json(
        "/api/m1/tokens",
        {"toolName": PROBE_TOOL, "scope": "read", "subject": PROBE_SOURCE, "ttlS": PROBE_TTL_S},
    )
    probe = ProbeToken(token=str(answer["token"]), jti=str(answer["jti"]))
    context.cleanup.append(lambda: revoke(context, probe))
    return probe


def revoke(context: Context, probe: ProbeToken) -> None:
    context.api().post_json(
        "/api/m1/tokens/revoke", {"jti": probe.jti, "reason": f"{PROBE_SOURCE} cleanup"}
    )


def introspect(context: Context, token: str) -> bool:
    answer = context.api().post_json("/api/m1/tokens/introspect", {"token": token})
    return bool(answer.get("active"))


def refuses_without_credentials(context: Context) -> Outcome:
    anonymous = context.api(authenticated=False, max_wait_s=0)
    answered = {
        f"{method} {path}": anonymous.request(method, path, json={}, check=False).status_code
        for method, path in GUARDED
    }
    let_in = {route: code for route, code in answered.items() if code not in (401, 403)}
    observed = ", ".join(sorted({str(code) for code in answered.values()}))
    threshold = f"401 or 403 on {len(GUARDED)} routes"
    if let_in:
        shown = ", ".join(f"{route} -> {code}" for route, code in let_in.items())
        return Outcome(Status.FAIL, observed, threshold, f"not refused: {shown}")
    return Outcome(Status.PASS, observed, threshold)


def revoked_token_denied(context: Context) -> Outcome:
    skipped = needs_key(context)
    if skipped is not None:
        return skipped
    limit_ms = context.slo.api.revocation_ms
    threshold = f"inactive within {limit_ms:g} ms of the revoke"
    probe = issue_probe_token(context)
    if not introspect(context, probe.token):
        return Outcome(Status.FAIL, "a fresh probe token is inactive", threshold)
    revoke(context, probe)
    started = time.perf_counter()
    while introspect(context, probe.token):
        if (time.perf_counter() - started) * 1000 > limit_ms:
            return Outcome(Status.FAIL, f"still active after {limit_ms:g} ms", threshold)
        time.sleep(0.05)
    ms = (time.perf_counter() - started) * 1000.0
    return Outcome(Status.PASS, f"denied after {ms:.0f} ms", threshold, "issue, revoke, introspect")


def cors(context: Context) -> Outcome:
    """A preflight from a foreign origin gets no Access-Control-Allow-Origin; ``*`` fails."""
    response = context.api(authenticated=False, max_wait_s=0).request(
        "OPTIONS",
        "/api/m1/dashboard/query",
        headers={"Origin": FOREIGN_ORIGIN, "Access-Control-Request-Method": "POST"},
        check=False,
    )
    allowed = response.headers.get("access-control-allow-origin")
    threshold = "no Access-Control-Allow-Origin for a foreign origin"
    if allowed is None:
        return Outcome(Status.PASS, f"{response.status_code}, no ACAO", threshold)
    return Outcome(
        Status.FAIL, f"ACAO {allowed!r}", threshold, "M1_CORS_ORIGINS lets any site call the API"
    )


def certificate_expiry(pem: bytes) -> datetime:
    return x509.load_pem_x509_certificate(pem).not_valid_after_utc


def _served_certificate(url: str, timeout_s: float) -> bytes:
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or 443
    return ssl.get_server_certificate((host, port), timeout=timeout_s).encode()


def tls(context: Context) -> Outcome:
    """The API URL is https in production (staging: warn), and the certificate (the configured
    file, else the one the API serves) is in date: expired fails, expiring soon warns."""
    url = context.target.api_url
    profile = context.target.profile
    cert_file: Path | None = context.target.tls_cert_file
    https = url.startswith("https://")
    pem: bytes | None = None
    where = ""
    if cert_file is not None:
        pem, where = cert_file.read_bytes(), str(cert_file)
    elif https:
        pem, where = _served_certificate(url, context.http_timeout_s), "served by the API"
    if pem is None:
        status = {
            Profile.LOCAL: Status.PASS,
            Profile.STAGING: Status.WARN,
            Profile.PRODUCTION: Status.FAIL,
        }[profile]
        return Outcome(status, "http, no certificate", "https in production", f"{url} is plain")
    try:
        expires = certificate_expiry(pem)
    except ValueError as error:
        return Outcome(Status.FAIL, "unreadable certificate", "a PEM certificate", str(error)[:200])
    days = (expires - datetime.now(UTC)).total_seconds() / 86400
    minimum = context.slo.tls.min_days_left
    threshold = f">= {minimum} days left"
    observed = f"{days:.1f} days left ({where})"
    if days <= 0:
        return Outcome(Status.FAIL, observed, threshold, f"expired {expires:%Y-%m-%d %H:%M} UTC")
    if days < minimum:
        return Outcome(Status.WARN, observed, threshold, "renew the certificate")
    if not https and profile is Profile.PRODUCTION:
        return Outcome(Status.FAIL, observed, "https in production", f"{url} is plain")
    return Outcome(Status.PASS, observed, threshold)


SCENARIOS: Final[list[Scenario]] = [
    Scenario("security.auth_required", "security", "routes refuse without credentials",
             refuses_without_credentials),
    Scenario("security.revoked_token", "security", "revoked token denied end to end",
             revoked_token_denied),
    Scenario("security.cors", "security", "CORS refuses a foreign origin", cors),
    Scenario("security.tls", "security", "TLS and certificate", tls),
]  # fmt: skip
