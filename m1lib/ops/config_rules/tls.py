"""The API's TLS certificate: readable, valid now and for a while, matching its key and host.

Live rules (they depend on the clock and the files as they are now); they apply only when
``M1_TLS_CERT_FILE`` and ``M1_TLS_KEY_FILE`` are set and exist (``tls.pair`` and
``files.missing`` report the rest). Parsing is ``cryptography``'s, already a dependency of PyJWT.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from m1lib.ops.config_rules.base import Context, Hit, live_rule
from m1lib.ops.config_rules.urls import split

_WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})  # noqa: S104 - names compared, not bound


@dataclass
class TlsProbe:
    cert: x509.Certificate | None = None
    key: PrivateKeyTypes | None = None
    error: str | None = None
    variable: str = "M1_TLS_CERT_FILE"


def _probe(context: Context) -> TlsProbe | None:
    tls = context.settings.tls
    if tls.cert_file is None or tls.key_file is None:
        return None
    if not tls.cert_file.is_file() or not tls.key_file.is_file():
        return None
    probe = TlsProbe()
    try:
        probe.cert = x509.load_pem_x509_certificate(tls.cert_file.read_bytes())
    except (OSError, ValueError) as error:
        probe.error = f"{tls.cert_file} is not a PEM certificate ({type(error).__name__})"
        return probe
    try:
        probe.key = serialization.load_pem_private_key(tls.key_file.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as error:
        probe.variable = "M1_TLS_KEY_FILE"
        probe.error = (
            f"{tls.key_file} is not an unencrypted PEM private key ({type(error).__name__}; "
            "the server cannot ask for a passphrase)"
        )
        return probe
    context.facts["tls_not_after"] = probe.cert.not_valid_after_utc.isoformat()
    return probe


def _tls(context: Context) -> TlsProbe | None:
    return context.memo("tls", lambda: _probe(context))


def _cert(context: Context) -> x509.Certificate | None:
    probe = _tls(context)
    return None if probe is None or probe.error is not None else probe.cert


def _now(context: Context) -> datetime:
    return context.now()


@live_rule("tls.unreadable", "CCC", "The TLS certificate or key cannot be read")
def _unreadable(context: Context) -> Iterator[Hit]:
    probe = _tls(context)
    if probe is not None and probe.error is not None:
        yield Hit(
            probe.variable,
            probe.error + ": the API will not start",
            "point M1_TLS_CERT_FILE at the PEM certificate (chain) and M1_TLS_KEY_FILE at its "
            "unencrypted PEM key",
        )


@live_rule("tls.expired", "MCC", "The TLS certificate is expired or not yet valid")
def _expired(context: Context) -> Iterator[Hit]:
    cert = _cert(context)
    if cert is None:
        return
    now = _now(context)
    if cert.not_valid_after_utc <= now:
        yield Hit(
            "M1_TLS_CERT_FILE",
            f"the certificate expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC: clients refuse it",
            "renew the certificate and restart the API",
        )
    elif cert.not_valid_before_utc > now:
        yield Hit(
            "M1_TLS_CERT_FILE",
            f"the certificate is valid only from {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC",
            "check this machine's clock, or wait for the certificate's start",
        )


@live_rule("tls.expiring", "LHH", "The TLS certificate expires soon")
def _expiring(context: Context) -> Iterator[Hit]:
    cert = _cert(context)
    if cert is None:
        return
    now = _now(context)
    days = context.settings.tls.expiry_warn_days
    if now < cert.not_valid_after_utc <= now + timedelta(days=days):
        left = cert.not_valid_after_utc - now
        yield Hit(
            "M1_TLS_CERT_FILE",
            f"the certificate expires in {left.days} days ({cert.not_valid_after_utc:%Y-%m-%d} UTC), "
            f"within M1_TLS_EXPIRY_WARN_DAYS ({days})",
            "renew it now (automate renewal, e.g. with an ACME client)",
        )


def _spki(key: object) -> bytes:
    public = key.public_key()  # type: ignore[attr-defined]
    encoded: bytes = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return encoded


@live_rule("tls.key_mismatch", "CCC", "The TLS key does not belong to the certificate")
def _key_mismatch(context: Context) -> Iterator[Hit]:
    probe = _tls(context)
    if probe is None or probe.error is not None or probe.cert is None or probe.key is None:
        return
    if _spki(probe.cert) != _spki(probe.key):
        yield Hit(
            "M1_TLS_KEY_FILE",
            "the private key is not the certificate's: every TLS handshake fails",
            "set M1_TLS_KEY_FILE to the key the certificate was issued for",
        )


def _served_host(context: Context) -> str | None:
    """The name clients use: the public URL's host, else the listen address when it is one."""
    settings = context.settings
    if settings.api.public_url:
        parts = split(settings.api.public_url)
        return parts.hostname if parts is not None else None
    host = settings.api.host
    return None if host in _WILDCARD_HOSTS else host


def _covers(cert: x509.Certificate, host: str) -> bool:
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is not None:
        return address in names.get_values_for_type(x509.IPAddress)
    wanted = host.lower().rstrip(".")
    for name in names.get_values_for_type(x509.DNSName):
        pattern = name.lower().rstrip(".")
        if pattern == wanted:
            return True
        if pattern.startswith("*.") and "." in wanted and wanted.split(".", 1)[1] == pattern[2:]:
            return True
    return False


@live_rule("tls.hostname", "LHH", "The TLS certificate does not name the API's host")
def _hostname(context: Context) -> Iterator[Hit]:
    cert = _cert(context)
    host = _served_host(context)
    if cert is None or host is None:
        return
    if not _covers(cert, host):
        yield Hit(
            "M1_TLS_CERT_FILE",
            f"the certificate's subject alternative names do not include {host!r}: clients "
            "reject the connection",
            "issue a certificate for the host in M1_API_PUBLIC_URL (or fix M1_API_PUBLIC_URL)",
        )
