"""M1_TRUSTED_PROXIES: a forwarded address is honoured from a trusted peer, ignored from anyone else."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from m1lib.api.proxies import TrustedProxyMiddleware, forwarded_client, parse_networks
from tests.m1lib.api.conftest import bearer

PROXIES = parse_networks(["10.0.0.0/8", "fd00::/8"])


@pytest.mark.parametrize(
    ("peer", "header", "client"),
    [
        ("10.0.0.5", "203.0.113.7", "203.0.113.7"),  # a trusted balancer: its word counts
        (
            "10.0.0.5",
            "198.51.100.1, 203.0.113.7",
            "203.0.113.7",
        ),  # the left part is the client's own claim
        ("10.0.0.5", "203.0.113.7, 10.0.0.9", "203.0.113.7"),  # two trusted hops
        ("10.0.0.5", "10.1.1.1, 10.0.0.9", "10.1.1.1"),  # all trusted: the leftmost
        ("10.0.0.5", "203.0.113.7:4711", "203.0.113.7"),  # a port is dropped
        ("10.0.0.5", "garbage", "10.0.0.5"),  # not an address: the peer stays the client
        ("10.0.0.5", "evil, 203.0.113.7", "203.0.113.7"),
        ("fd00::1", "[2001:db8::5]:443", "2001:db8::5"),
        ("::ffff:10.0.0.5", "203.0.113.7", "203.0.113.7"),  # IPv4 peer on a dual-stack socket
        ("192.0.2.50", "203.0.113.7", "192.0.2.50"),  # not a proxy: the header is ignored
        ("testclient", "203.0.113.7", "testclient"),  # not even an address
        ("10.0.0.5", None, "10.0.0.5"),
    ],
)
def test_forwarded_client(peer: str, header: str | None, client: str) -> None:
    assert forwarded_client(peer, header, PROXIES) == client


def test_without_trusted_proxies_the_header_never_counts() -> None:
    assert forwarded_client("10.0.0.5", "203.0.113.7", ()) == "10.0.0.5"


def test_a_bad_entry_is_refused_naming_it() -> None:
    with pytest.raises(ValueError, match=r"'10\.0\.0\.300'"):
        parse_networks(["10.0.0.300"])


def _echo_app() -> Starlette:
    async def who(request: Request) -> JSONResponse:
        host = request.client.host if request.client else None
        return JSONResponse({"client": host, "scheme": request.url.scheme})

    app = Starlette(routes=[Route("/", who)])
    app.add_middleware(TrustedProxyMiddleware, networks=["10.0.0.0/8"])
    return app


def test_the_scope_carries_the_forwarded_client_from_a_trusted_peer() -> None:
    client = TestClient(_echo_app(), client=("10.0.0.5", 50000))
    headers = {"X-Forwarded-For": "198.51.100.1, 203.0.113.7", "X-Forwarded-Proto": "https"}
    assert client.get("/", headers=headers).json() == {"client": "203.0.113.7", "scheme": "https"}


def test_the_scope_keeps_the_peer_when_it_is_not_trusted() -> None:
    client = TestClient(_echo_app(), client=("192.0.2.50", 50000))
    headers = {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"}
    assert client.get("/", headers=headers).json() == {"client": "192.0.2.50", "scheme": "http"}


def _failures(client: TestClient, forwarded_for: str, count: int) -> list[int]:
    headers = {**bearer("m1_wrong"), "X-Forwarded-For": forwarded_for}
    return [client.get("/api/m1/replicas", headers=headers).status_code for _ in range(count)]


def test_rate_limits_count_forwarded_clients_apart_behind_a_trusted_balancer(
    make_client: Callable[..., TestClient],
) -> None:
    first = make_client(trusted_proxies=["10.0.0.0/8"], ratelimit={"login_per_min": 2})
    balancer = TestClient(first.app, client=("10.0.0.5", 50000), raise_server_exceptions=False)
    assert _failures(balancer, "203.0.113.7", 3) == [401, 401, 429]
    assert _failures(balancer, "203.0.113.8", 1) == [401]  # another client: its own limit


def test_rate_limits_ignore_the_header_from_an_untrusted_peer(
    make_client: Callable[..., TestClient],
) -> None:
    first = make_client(trusted_proxies=["10.0.0.0/8"], ratelimit={"login_per_min": 2})
    stranger = TestClient(first.app, client=("192.0.2.50", 50000), raise_server_exceptions=False)
    assert _failures(stranger, "203.0.113.7", 2) == [401, 401]
    assert _failures(stranger, "203.0.113.8", 1) == [429]  # a new header is not a new client
