"""Reading the URLs and hosts of a configuration, for rules that judge where M1 connects."""

from __future__ import annotations

import ipaddress
from urllib.parse import SplitResult, urlsplit

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from m1lib.db.session import normalize_url

__all__ = ["database_url", "is_loopback", "split"]

_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


def is_loopback(host: str | None) -> bool:
    """A host on this machine (or a Unix socket: no host): traffic never leaves it."""
    if not host:
        return True
    name = host.strip("[]").lower()
    if name in _LOOPBACK_NAMES or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def database_url(url: str) -> URL | None:
    """The parsed database URL, or None when SQLAlchemy cannot read it."""
    try:
        return make_url(normalize_url(url))
    except (ArgumentError, ValueError):
        return None


def split(url: str) -> SplitResult | None:
    """``urlsplit`` that answers None for what it cannot read (a bad port, say)."""
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises on a port that is not a number
    except ValueError:
        return None
    return parts
