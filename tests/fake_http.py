"""A small HTTP server of a test's own: a fake Prefect API, fake replicas' readiness."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Routes = dict[str, tuple[int, Any]]


class FakeHttp(ThreadingHTTPServer):
    """Answers each path with a fixed status and JSON body (GET and POST alike)."""

    def __init__(self, routes: Routes) -> None:
        self.routes = routes
        self.requests: list[str] = []
        super().__init__(("127.0.0.1", 0), _Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: FakeHttp

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.server.requests.append(self.path)
        status, body = self.server.routes.get(self.path, (404, {"detail": "no such path"}))
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = _answer  # noqa: N815
    do_POST = _answer  # noqa: N815

    def log_message(self, format: str, *args: Any) -> None:
        return


def fake_http_servers() -> Iterator[Callable[[Routes], FakeHttp]]:
    """Yield a starter of servers; every server it started is shut down after."""
    servers: list[FakeHttp] = []

    def start(routes: Routes) -> FakeHttp:
        server = FakeHttp(routes)
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()
