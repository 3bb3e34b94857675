"""The client's address behind a load balancer: ``X-Forwarded-For`` only from a trusted proxy.

Behind a balancer every connection comes from the balancer, so rate limits per client address
and access logs would count everyone as one client. ``M1_TRUSTED_PROXIES`` lists the balancers
(addresses or networks); :func:`forwarded_client` takes the client from ``X-Forwarded-For`` only
when the connection's peer is one of them, walking the header from the right past every trusted
hop (each proxy appends the address it saw, so the first untrusted one from the right is the
last one a trusted proxy vouched for; what a client wrote to the left of it is ignored).

:class:`TrustedProxyMiddleware` applies it once per request by rewriting the ASGI scope's
``client`` (and ``scheme`` from ``X-Forwarded-Proto``) in place, so everything after it —
``request.client`` in the rate limits (:func:`m1lib.api.deps.client_address`), uvicorn's access
log — sees the same address. (Audits record the credential's name, never an address.)

Why M1 and not uvicorn's ``--forwarded-allow-ips``: the trusted list is then one validated M1
setting (uvicorn keeps a malformed entry as a literal string, silently, and reads its own
``FORWARDED_ALLOW_IPS`` variable), it holds under any ASGI server and in tests, and uvicorn's
``proxy_headers`` stays off so the header is never interpreted twice.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from typing import Final

from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = [
    "Network",
    "TrustedProxyMiddleware",
    "forwarded_client",
    "is_trusted",
    "parse_networks",
]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_SCHEMES: Final = frozenset({"http", "https"})


def parse_networks(values: Iterable[str | Network]) -> tuple[Network, ...]:
    """Networks from addresses (``10.0.0.7``) or networks (``10.0.0.0/8``); ValueError names
    the entry that is neither."""
    networks: list[Network] = []
    for value in values:
        if isinstance(value, ipaddress.IPv4Network | ipaddress.IPv6Network):
            networks.append(value)
            continue
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise ValueError(
                f"M1_TRUSTED_PROXIES: {value!r} is not an IP address or network"
            ) from None
    return tuple(networks)


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An address from one ``X-Forwarded-For`` entry (``1.2.3.4``, ``1.2.3.4:5``, ``[::1]:5``)."""
    value = text.strip()
    if value.startswith("["):
        value = value[1 : value.find("]")] if "]" in value else value
    elif value.count(":") == 1:
        value = value.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _trusted(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address, networks: Sequence[Network]
) -> bool:
    return any(address.version == net.version and address in net for net in networks)


def is_trusted(peer: str | None, networks: Sequence[Network]) -> bool:
    """Whether the connection's peer is one of the trusted proxies."""
    address = _address(peer) if peer else None
    return address is not None and _trusted(address, networks)


def forwarded_client(
    peer: str | None, forwarded_for: str | None, networks: Sequence[Network]
) -> str | None:
    """The client's address: ``peer`` unless it is a trusted proxy sending ``X-Forwarded-For``.

    From a trusted peer, the header's entries are read right to left; the first that is not a
    trusted proxy is the client (all trusted: the leftmost). An entry that is not an address
    ends the walk at the last good one, so garbage never becomes a client. From any other peer
    the header is ignored.
    """
    if not forwarded_for or not is_trusted(peer, networks):
        return peer
    client = peer
    for entry in reversed(forwarded_for.split(",")):
        address = _address(entry)
        if address is None:
            break
        client = str(address)
        if not _trusted(address, networks):
            break
    return client


class TrustedProxyMiddleware:
    """Rewrites ``scope["client"]`` (and ``scheme``) from the forwarding headers of trusted
    proxies; a no-op without any. Outermost, so every layer sees the client's address."""

    def __init__(self, app: ASGIApp, *, networks: Iterable[str | Network]) -> None:
        self.app = app
        self.networks = parse_networks(networks)  # a bad entry fails at startup, naming it

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and self.networks:
            self._rewrite(scope)
        await self.app(scope, receive, send)

    def _rewrite(self, scope: Scope) -> None:
        client = scope.get("client")
        peer = client[0] if client else None
        if not is_trusted(peer, self.networks):
            return  # anyone else's forwarding headers are ignored
        forwarded: list[str] = []
        for name, value in scope.get("headers", ()):
            if name == b"x-forwarded-for":
                forwarded.append(value.decode("latin-1"))
            elif name == b"x-forwarded-proto" and scope["type"] == "http":
                proto = value.decode("latin-1").strip().lower()
                if proto in _SCHEMES:
                    scope["scheme"] = proto
        chosen = forwarded_client(peer, ",".join(forwarded) or None, self.networks)
        if chosen is not None and chosen != peer:
            scope["client"] = (chosen, 0)
