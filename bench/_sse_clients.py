"""One client process of the stream benchmark: ``--count`` SSE connections on raw sockets.

Cheap on purpose, so the clients are never what is measured: non-blocking sockets on one
``selectors`` loop, a chunked-body decoder and a parser that reads only each event's ``event:``
and ``id:`` lines (a snapshot's id is its tick in epoch ms, an alert's id starts with its raise
time in epoch µs: both servers of the benchmark name events so). Each ``recv`` is stamped once
with ``time.time()``; every event completed by it gets that stamp.

Protocol with the parent: prints ``ready`` once every connection answered 200 and received a
snapshot (or ``failed <why>`` and exits 1), then reads its stdin; on EOF or any line it writes
``--out`` (JSON: latency samples, per-connection counts, its CPU time since ``ready``) and exits.
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SNAPSHOT_KINDS = frozenset(
    {b"cache_metrics", b"policy_decisions", b"tool_executions", b"cost_update"}
)
CONNECT_DEADLINE_S = 60.0
RECV_BYTES = 65536


@dataclass(eq=False)
class Connection:
    """One SSE stream: its socket, decoding state and what it received."""

    sock: socket.socket
    request: bytes
    keep_payload: bool = False
    status: int | None = None
    head: bytearray = field(default_factory=bytearray)
    raw: bytearray = field(default_factory=bytearray)  # chunked framing not yet decoded
    body: bytearray = field(default_factory=bytearray)  # decoded, events not yet complete
    chunked: bool = False
    chunk_size: int | None = None
    ended: bool = False
    ticks: dict[int, float] = field(default_factory=dict)  # tick ms -> last snapshot event's recv
    tick_events: int = 0
    alerts: dict[int, float] = field(default_factory=dict)  # raise time µs -> recv time
    payload: dict[str, str] = field(default_factory=dict)  # kind -> envelope (keep_payload only)

    def feed(self, data: bytes, now: float) -> None:
        if self.status is None:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            lines = bytes(self.head[:end]).decode("latin-1").split("\r\n")
            self.status = int(lines[0].split()[1])
            self.chunked = any(
                line.lower().replace(" ", "") == "transfer-encoding:chunked" for line in lines[1:]
            )
            data = bytes(self.head[end + 4 :])
            self.head.clear()
        if not self.chunked:
            self.body += data
        else:
            self._dechunk(data)
        self._events(now)

    def _dechunk(self, data: bytes) -> None:
        raw = self.raw
        raw += data
        while True:
            if self.chunk_size is None:
                line_end = raw.find(b"\r\n")
                if line_end < 0:
                    return
                self.chunk_size = int(bytes(raw[:line_end]).split(b";", 1)[0], 16)
                del raw[: line_end + 2]
                if self.chunk_size == 0:
                    self.ended = True
                    return
            if len(raw) < self.chunk_size + 2:
                return
            self.body += raw[: self.chunk_size]
            del raw[: self.chunk_size + 2]
            self.chunk_size = None

    def _events(self, now: float) -> None:
        body = self.body
        start = 0
        while True:
            end = body.find(b"\n\n", start)
            if end < 0:
                break
            kind = ident = b""
            data = b""
            for line in bytes(body[start:end]).split(b"\n"):
                if line.startswith(b"event: "):
                    kind = line[7:]
                elif line.startswith(b"id: "):
                    ident = line[4:]
                elif self.keep_payload and line.startswith(b"data: "):
                    data = line[6:]
            start = end + 2
            if kind in SNAPSHOT_KINDS:
                self.ticks[int(ident)] = now
                self.tick_events += 1
                if self.keep_payload:
                    self.payload[kind.decode()] = data.decode()
            elif kind == b"error_alert":
                self.alerts[int(ident.split(b"-", 1)[0])] = now
        if start:
            del body[:start]


def open_connections(port: int, path: str, key: str, count: int) -> list[Connection]:
    request = (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n"
        f"Authorization: Bearer {key}\r\n\r\n"
    ).encode()
    connections = []
    for index in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.connect_ex(("127.0.0.1", port))
        connections.append(Connection(sock, request, keep_payload=index == 0))
    return connections


def run(options: argparse.Namespace) -> int:
    selector = selectors.DefaultSelector()
    connections = open_connections(options.port, options.path, options.key, options.count)
    for connection in connections:
        selector.register(connection.sock, selectors.EVENT_WRITE, connection)
    stdin = sys.stdin.fileno()
    ready_at: float | None = None
    cpu_at_ready: os.times_result | None = None
    deadline = time.monotonic() + CONNECT_DEADLINE_S
    stopping = False
    bytes_received = 0
    while not stopping:
        for selected, mask in selector.select(timeout=0.5):
            connection = selected.data
            if connection is None:  # stdin: the parent says stop
                stopping = True
                continue
            if mask & selectors.EVENT_WRITE:
                error = connection.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if error:
                    print(f"failed connect: {os.strerror(error)}", flush=True)
                    return 1
                connection.sock.sendall(connection.request)
                selector.modify(connection.sock, selectors.EVENT_READ, connection)
                continue
            try:
                data = connection.sock.recv(RECV_BYTES)
            except BlockingIOError:
                continue
            now = time.time()
            if not data:
                print(f"failed: a stream ended (status {connection.status})", flush=True)
                return 1
            bytes_received += len(data)
            connection.feed(data, now)
            if connection.status not in (None, 200):
                print(f"failed: HTTP {connection.status}", flush=True)
                return 1
        if ready_at is None:
            if all(connection.ticks for connection in connections):
                ready_at = time.time()
                cpu_at_ready = os.times()
                selector.register(stdin, selectors.EVENT_READ, None)
                print("ready", flush=True)
            elif time.monotonic() > deadline:
                waiting = sum(1 for connection in connections if not connection.ticks)
                print(f"failed: {waiting} streams without a snapshot in time", flush=True)
                return 1
    assert ready_at is not None
    assert cpu_at_ready is not None
    cpu = os.times()
    wall = time.time() - ready_at
    result: dict[str, Any] = {
        "ready_at": ready_at,
        "wall_s": wall,
        "cpu_user_s": cpu.user - cpu_at_ready.user,
        "cpu_sys_s": cpu.system - cpu_at_ready.system,
        "bytes_received": bytes_received,
        # [event time (s), latency (s)]: a tick's last snapshot event, an alert's arrival
        "snapshots": [
            [tick / 1000, recv - tick / 1000] for c in connections for tick, recv in c.ticks.items()
        ],
        "alerts": [
            [us / 1e6, recv - us / 1e6] for c in connections for us, recv in c.alerts.items()
        ],
        "per_client": [[len(c.ticks), len(c.alerts), c.tick_events] for c in connections],
        "payload": connections[0].payload,
    }
    Path(options.out).write_text(json.dumps(result))
    for connection in connections:
        connection.sock.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", required=True)
    parser.add_argument("--key", default="")
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--out", required=True)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
