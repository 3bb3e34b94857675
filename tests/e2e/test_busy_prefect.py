"""Creating flow runs rides out a busy Prefect server: 503s and dropped connections are retried.

A local Prefect server answers 503 while its SQLite is busy. ``BusyPrefect`` stands in front of
the live one and answers the next requests to create a flow run as a busy server does (its very
503 body), or drops the connection unanswered, then lets requests through: what M1's Prefect
client (``deployments.prefect_api``) does about each is counted here.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from tests.e2e import prefect_api
from tests.e2e.live import LiveM1

pytestmark = pytest.mark.e2e

BUSY_BODY = b'{"exception_message": "Service Unavailable"}'
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


class BusyPrefect(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, upstream: str) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.upstream = upstream  # http://host:port, the live Prefect server
        self.faults: list[str] = []  # "503" or "drop", for the next create_flow_run requests
        self.creates: list[str] = []  # what each create_flow_run request got
        self.lock = threading.Lock()

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/api"


class _Handler(BaseHTTPRequestHandler):
    server: BusyPrefect
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _handle(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        fault = None
        if self.path.endswith("/create_flow_run"):
            with self.server.lock:
                fault = self.server.faults.pop(0) if self.server.faults else None
                self.server.creates.append(fault or "passed")
        if fault == "drop":
            self.close_connection = True
            return
        if fault == "503":
            self._answer(503, {"content-type": "application/json"}, BUSY_BODY)
            return
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        reply = httpx.request(
            self.command, self.server.upstream + self.path, headers=headers, content=body
        )
        self._answer(reply.status_code, reply.headers, reply.content)

    def _answer(self, status: int, headers: httpx.Headers | dict[str, str], body: bytes) -> None:
        self.send_response(status)
        for name, value in headers.items():
            if name.lower() not in HOP_BY_HOP | {"content-encoding", "date", "server"}:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()


@pytest.fixture
def busy_prefect(live_m1: LiveM1) -> Iterator[BusyPrefect]:
    server = BusyPrefect(live_m1.prefect_api_url.removesuffix("/api"))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_creating_a_flow_run_rides_out_a_503_and_a_dropped_connection(
    live_m1: LiveM1, busy_prefect: BusyPrefect
) -> None:
    deployment = prefect_api.deployment_by_name(live_m1.prefect_api_url, "database-setup")
    busy_prefect.faults = ["503", "drop"]
    run_id = prefect_api.schedule_deployment_later(busy_prefect.api_url, deployment.id)
    assert busy_prefect.creates == ["503", "drop", "passed"]
    run = prefect_api.read_flow_run(live_m1.prefect_api_url, run_id)  # straight from the server
    assert run.deployment_id == deployment.id


def test_a_request_the_server_refuses_is_answered_at_once_not_retried(
    live_m1: LiveM1, busy_prefect: BusyPrefect
) -> None:
    deployment = prefect_api.deployment_by_name(live_m1.prefect_api_url, "database-setup")
    with pytest.raises(httpx.HTTPStatusError) as refused:
        prefect_api.run_deployment(
            busy_prefect.api_url, deployment.id, {"params": {"target_revision": "drop table"}}
        )
    assert refused.value.response.status_code == 409
    assert busy_prefect.creates == ["passed"]
