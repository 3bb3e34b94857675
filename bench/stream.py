"""Live stream: tick-to-client and raise-to-client latency and memory per client, 1,000 SSE clients.

One M1 API replica (``bench/_stream_replica.py``: ``create_app`` under ``StreamAwareServer`` as
``python -m m1lib.api`` runs it, SQLite, a viewer key made for the run, events fed so the ticks
compute over a real window) serves ``GET /api/m1/dashboard/stream`` to N clients held by several
client processes (``bench/_sse_clients.py``: raw non-blocking sockets; their CPU is reported).
Then the same clients and measurements against a plain sse-starlette broadcaster with one queue
per client and per-client encoding (``bench/_sse_reference.py``), in the same run.

- Snapshot latency: per client and tick, the receive time of the tick's last snapshot event minus
  the tick time (its id, ``floor(now / tick) * tick``). The tick's own computing counts.
- Alert latency: a driver asks the server (``POST /bench/alert``; the reference ``POST /alert``)
  to raise an alert every 150-250 ms (random, so alerts do not keep one phase against M1's 50 ms
  alert scan); per client, receive time minus the alert's raise time (its id), set in the server.
- Memory per client: the server's RSS with the N clients connected and settled minus its RSS with
  none, over N.
- Stalled client (M1 only): a normal phase, a phase with one more client that connects with a
  tiny receive buffer and never reads, another normal phase (the normal ones bracket the stall, so
  a drift over the run shows as their spread, not as the stall's effect). Rule: the stalled
  phase's p99 is within noise when it is at most the larger normal p99 plus the run-to-run
  spread: the normal phases' difference, but at least a tenth of the larger.

Also in the parameters, to say where the time goes: per tick or alert, the first client's latency
(the server's delay before it sends anything) and the last client's minus the first's (the
fan-out); the server's full garbage collections during the phases (each one holds every stream)
and how many objects they walk.

All times are ``time.time()`` on one machine. Targets: p99 <= 50 ms for both latencies, memory
per client no more than the reference's, and the stalled client within noise.
"""

from __future__ import annotations

import http.client
import json
import random
import selectors
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import _harness
import psutil
from _harness import Figure, Measured, percentiles_ms

NAME = "stream"
HERE = Path(__file__).resolve().parent
M1_SCRIPT = HERE / "_stream_replica.py"
REFERENCE_SCRIPT = HERE / "_sse_reference.py"
CLIENT_SCRIPT = HERE / "_sse_clients.py"
M1_PATH = "/api/m1/dashboard/stream"
TARGET_P99_MS = 50.0
START_DEADLINE_S = 60.0
READY_DEADLINE_S = 90.0
STALLED_RCVBUF = 1024
REFERENCE_LABEL = "sse-starlette, one queue per client"


@dataclass(frozen=True)
class Size:
    clients: int
    processes: int
    phase_s: float  # each measured phase
    settle_s: float  # after every client is connected, before RSS is read
    tick_ms: int = 500  # M1_STREAM_TICK_MS's default
    alert_every_s: tuple[float, float] = (0.15, 0.25)
    feed_per_s: float = 200.0


FULL = Size(clients=1000, processes=4, phase_s=20.0, settle_s=3.0)
SMOKE = Size(clients=20, processes=2, phase_s=1.5, settle_s=0.5)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def get_json(port: int, path: str, method: str = "GET") -> Any:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"{method} {path}: HTTP {response.status} {body[:200]!r}")
        return json.loads(body)
    finally:
        connection.close()


class Server:
    """A server process on a free port, its log in the work directory; always stopped."""

    def __init__(self, name: str, command: list[str], port: int, workdir: Path) -> None:
        self.name, self.port, self.log = name, port, workdir / f"{name}.log"
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        self.ps = psutil.Process(self.process.pid)

    def wait_ready(self, path: str) -> None:
        deadline = time.monotonic() + START_DEADLINE_S
        while True:
            self.check_alive()
            try:
                get_json(self.port, path)
                return
            except (OSError, RuntimeError, http.client.HTTPException):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.name} did not answer {path} in time") from None
                time.sleep(0.1)

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            log = self.log.read_text(errors="replace")[-4000:]
            raise RuntimeError(f"{self.name} exited ({self.process.returncode}):\n{log}")

    def rss(self) -> float:
        """Median of a few readings, so one allocation burst does not decide it."""
        readings = []
        for _ in range(5):
            readings.append(self.ps.memory_info().rss)
            time.sleep(0.1)
        return float(statistics.median(readings))

    def cpu_s(self) -> float:
        times = self.ps.cpu_times()
        return float(times.user + times.system)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


class Fleet:
    """The client processes; ``ready`` once each has every stream open and a snapshot in."""

    def __init__(self, size: Size, port: int, path: str, key: str, workdir: Path) -> None:
        self.outs: list[Path] = []
        self.processes: list[subprocess.Popen[bytes]] = []
        counts = [size.clients // size.processes] * size.processes
        for index in range(size.clients % size.processes):
            counts[index] += 1
        for index, count in enumerate(counts):
            out = workdir / f"clients-{port}-{index}.json"
            self.outs.append(out)
            self.processes.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        str(CLIENT_SCRIPT),
                        "--port",
                        str(port),
                        "--path",
                        path,
                        "--key",
                        key,
                        "--count",
                        str(count),
                        "--out",
                        str(out),
                    ],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                )
            )

    def wait_ready(self, server: Server) -> None:
        selector = selectors.DefaultSelector()
        for process in self.processes:
            assert process.stdout is not None
            selector.register(process.stdout, selectors.EVENT_READ, process)
        waiting = len(self.processes)
        deadline = time.monotonic() + READY_DEADLINE_S
        while waiting:
            server.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"{waiting} client processes not ready in time")
            for key, _ in selector.select(timeout=0.5):
                stream: IO[bytes] = key.fileobj  # type: ignore[assignment]
                line = stream.readline().decode().strip()
                if line != "ready":
                    raise RuntimeError(f"a client process: {line or 'exited'}")
                selector.unregister(stream)
                waiting -= 1

    def stop(self) -> list[dict[str, Any]]:
        for process in self.processes:
            if process.stdin is not None and process.poll() is None:
                process.stdin.write(b"stop\n")
                process.stdin.close()
        results = []
        for process, out in zip(self.processes, self.outs, strict=True):
            code = process.wait(60)
            if code != 0:
                tail = process.stdout.read().decode() if process.stdout else ""
                raise RuntimeError(f"a client process exited {code}: {tail}")
            results.append(json.loads(out.read_text()))
        return results

    def kill(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait(10)


class AlertDriver(threading.Thread):
    """Asks the server to raise an alert every ``every_s`` (a random pause in that range)."""

    def __init__(self, port: int, path: str, every_s: tuple[float, float]) -> None:
        super().__init__(daemon=True)
        self.port, self.path, self.every_s = port, path, every_s
        self.halt = threading.Event()
        self.raised = 0
        self.error: Exception | None = None

    def run(self) -> None:
        rng = random.Random(7)
        try:
            connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            while not self.halt.wait(rng.uniform(*self.every_s)):
                connection.request("POST", self.path)
                response = connection.getresponse()
                response.read()
                if response.status != 200:
                    raise RuntimeError(f"POST {self.path}: HTTP {response.status}")
                self.raised += 1
            connection.close()
        except Exception as error:  # reported by stop()
            self.error = error

    def stop(self) -> int:
        self.halt.set()
        self.join(30)
        if self.error is not None:
            raise RuntimeError(f"the alert driver failed: {self.error}")
        return self.raised


def stalled_client(port: int, path: str, key: str) -> socket.socket:
    """A stream client that asks and then never reads (a frozen tab on a slow link)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, STALLED_RCVBUF)
    sock.connect(("127.0.0.1", port))
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n\r\n".encode()
    )
    return sock


@dataclass
class Run:
    """What one server's run measured; the phases are (name, start, end) in epoch seconds."""

    phases: list[tuple[str, float, float]]
    clients: list[dict[str, Any]]
    rss_idle: float
    rss_loaded: float
    clients_n: int
    server_cpu_s: float
    wall_s: float
    alerts_raised: int
    hub: dict[str, Any] = field(default_factory=dict)
    at_start: dict[str, Any] = field(default_factory=dict)
    stalled_seen: dict[str, Any] = field(default_factory=dict)  # the server, as the stall ends

    def gc_pauses(self) -> dict[str, Any]:
        """The server's full collections during the phases: each one stops every stream."""
        seen = self.hub.get("gc_full_collections", {})
        during = [
            {"phase": name, "at_s": round(at - self.phases[0][1], 2), "ms": ms}
            for at, ms in seen.get("pauses", [])
            for name, start, end in self.phases
            if start <= at < end
        ]
        return {
            "during_phases": during,
            "total_ms": round(sum(pause["ms"] for pause in during), 1),
            "before_phases": seen.get("count", 0) - len(during),
            "tracked_objects_at_start": self.at_start.get("gc_full_collections", {}).get(
                "tracked_objects"
            ),
            "tracked_objects_at_end": seen.get("tracked_objects"),
        }

    def samples(self, kind: str, *phase_names: str) -> list[float]:
        windows = [(start, end) for name, start, end in self.phases if name in phase_names]
        return [
            latency
            for result in self.clients
            for at, latency in result[kind]
            if any(start <= at < end for start, end in windows)
        ]

    def breakdown(self, kind: str, *phase_names: str) -> dict[str, float]:
        """Per tick (or alert): the first client's latency (the server's delay before it sends
        anything) and the last client's minus the first's (how long sending to all takes)."""
        windows = [(start, end) for name, start, end in self.phases if name in phase_names]
        by_event: dict[float, list[float]] = {}
        for result in self.clients:
            for at, latency in result[kind]:
                if any(start <= at < end for start, end in windows):
                    by_event.setdefault(at, []).append(latency)
        firsts = [min(latencies) for latencies in by_event.values()]
        spreads = [max(latencies) - min(latencies) for latencies in by_event.values()]
        first, spread = percentiles_ms(firsts), percentiles_ms(spreads)
        return {
            "events": len(by_event),
            "first_client_p50": round(first["p50"], 3),
            "first_client_p99": round(first["p99"], 3),
            "fan_out_p50": round(spread["p50"], 3),
            "fan_out_p99": round(spread["p99"], 3),
        }

    def stats(self, kind: str, *phase_names: str) -> dict[str, float]:
        return {k: round(v, 3) for k, v in percentiles_ms(self.samples(kind, *phase_names)).items()}

    @property
    def memory_per_client_kib(self) -> float:
        return (self.rss_loaded - self.rss_idle) / self.clients_n / 1024

    def client_cpu(self) -> dict[str, Any]:
        per_process = [
            round((r["cpu_user_s"] + r["cpu_sys_s"]) / r["wall_s"] * 100, 2) for r in self.clients
        ]
        return {
            "user_s": round(sum(r["cpu_user_s"] for r in self.clients), 3),
            "sys_s": round(sum(r["cpu_sys_s"] for r in self.clients), 3),
            "wall_s": round(max(r["wall_s"] for r in self.clients), 3),
            "pct_of_one_core_per_process": per_process,
            "pct_of_one_core_total": round(sum(per_process), 2),
        }

    def deliveries(self) -> dict[str, int]:
        per_client = [entry for r in self.clients for entry in r["per_client"]]
        return {
            "clients": len(per_client),
            "min_ticks_per_client": min(entry[0] for entry in per_client),
            "min_alerts_per_client": min(entry[1] for entry in per_client),
            "alerts_raised": self.alerts_raised,
            "alert_deliveries_missing": self.alerts_raised * len(per_client)
            - sum(entry[1] for entry in per_client),
        }


def drive(
    server: Server,
    size: Size,
    *,
    stream_path: str,
    key: str,
    alert_path: str,
    stats_path: str,
    workdir: Path,
    phases: list[str],
    stall_phase: str | None = None,
) -> Run:
    """Idle RSS, clients in, settled RSS, then the phases back to back with alerts raised."""
    server.wait_ready(stats_path)
    time.sleep(size.tick_ms / 1000 * 2)  # a few ticks with nobody connected
    rss_idle = server.rss()
    fleet = Fleet(size, server.port, stream_path, key, workdir)
    stalled: socket.socket | None = None
    try:
        fleet.wait_ready(server)
        time.sleep(size.settle_s)
        rss_loaded = server.rss()
        at_start = get_json(server.port, stats_path)
        driver = AlertDriver(server.port, alert_path, size.alert_every_s)
        cpu_before, began = server.cpu_s(), time.time()
        driver.start()
        windows: list[tuple[str, float, float]] = []
        stalled_seen: dict[str, Any] = {}
        for name in phases:
            if name == stall_phase:
                stalled = stalled_client(server.port, stream_path, key)
            start = time.time()
            time.sleep(size.phase_s)
            windows.append((name, start, time.time()))
            server.check_alive()
            if stalled is not None:
                stalled_seen = get_json(server.port, stats_path)
                stalled.close()
                stalled = None
        raised = driver.stop()
        server_cpu = server.cpu_s() - cpu_before
        wall = time.time() - began
        time.sleep(1.0)  # the last alerts reach every client
        hub = get_json(server.port, stats_path)
        clients = fleet.stop()
    finally:
        fleet.kill()
        if stalled is not None:
            stalled.close()
    return Run(
        windows, clients, rss_idle, rss_loaded, size.clients, server_cpu, wall, raised, hub,
        at_start, stalled_seen,
    )  # fmt: skip


def run_m1(size: Size, workdir: Path) -> Run:
    port = free_port()
    key_file = workdir / "viewer.key"
    command = [
        sys.executable, str(M1_SCRIPT), "--port", str(port), "--data-dir", str(workdir / "m1"),
        "--key-file", str(key_file), "--tick-ms", str(size.tick_ms),
        "--max-clients", str(size.clients + 100), "--feed-per-s", str(size.feed_per_s),
    ]  # fmt: skip
    server = Server("m1", command, port, workdir)
    try:
        server.wait_ready("/bench/hub")
        return drive(
            server, size, stream_path=M1_PATH, key=key_file.read_text().strip(),
            alert_path="/bench/alert", stats_path="/bench/hub", workdir=workdir,
            phases=["normal-1", "stalled", "normal-2"], stall_phase="stalled",
        )  # fmt: skip
    finally:
        server.stop()


def run_reference(size: Size, workdir: Path, payload: dict[str, Any]) -> Run:
    port = free_port()
    payload_file = workdir / "payload.json"
    payload_file.write_text(json.dumps(payload))
    command = [
        sys.executable, str(REFERENCE_SCRIPT), "--port", str(port), "--payload", str(payload_file),
        "--tick-ms", str(size.tick_ms),
    ]  # fmt: skip
    server = Server("reference", command, port, workdir)
    try:
        return drive(
            server, size, stream_path="/stream", key="", alert_path="/alert",
            stats_path="/stats", workdir=workdir, phases=["normal-1", "normal-2"],
        )  # fmt: skip
    finally:
        server.stop()


def captured_payload(run: Run) -> dict[str, Any]:
    """M1's last snapshot data of each type, as one of its clients received it."""
    envelopes = run.clients[0]["payload"]
    return {kind: json.loads(text)["data"] for kind, text in envelopes.items()}


def within_noise(first: float, second: float, stalled: float) -> bool:
    """The rule: at most the larger normal p99 plus the run-to-run spread, taken as the two
    normal p99s' difference but at least a tenth of the larger (two runs can agree by chance)."""
    top = max(first, second)
    return stalled <= top + max(abs(first - second), 0.1 * top)


def measure(smoke: bool) -> Measured:
    size = SMOKE if smoke else FULL
    with tempfile.TemporaryDirectory(prefix="m1-bench-stream-") as tmp:
        workdir = Path(tmp)
        m1 = run_m1(size, workdir)
        ref = run_reference(size, workdir, captured_payload(m1))
    normal = ("normal-1", "normal-2")
    summary: dict[str, Any] = {}
    verdicts: dict[str, bool] = {}
    for kind in ("snapshots", "alerts"):
        p99s = [m1.stats(kind, name)["p99"] for name in (*normal, "stalled")]
        verdicts[kind] = within_noise(*p99s)
        summary[kind] = {
            "m1_normal": m1.stats(kind, *normal),
            "m1_normal_1": m1.stats(kind, "normal-1"),
            "m1_normal_2": m1.stats(kind, "normal-2"),
            "m1_stalled": m1.stats(kind, "stalled"),
            "reference": ref.stats(kind, *normal),
            "m1_normal_per_event": m1.breakdown(kind, *normal),
            "reference_per_event": ref.breakdown(kind, *normal),
            "samples_m1_normal": len(m1.samples(kind, *normal)),
            "samples_m1_stalled": len(m1.samples(kind, "stalled")),
            "samples_reference": len(ref.samples(kind, *normal)),
            "stalled_within_noise": verdicts[kind],
        }
    figures = build_figures(m1, ref, summary, verdicts)
    return Measured(
        figures=figures,
        parameters={
            "clients": size.clients,
            "client_processes": size.processes,
            "phase_s": size.phase_s,
            "tick_ms": size.tick_ms,
            "alert_every_s": list(size.alert_every_s),
            "events_fed_per_s": size.feed_per_s,
            "database": "sqlite",
            "latency": "receive time.time() minus tick time (snapshot id) or raise time (alert "
            "id), same machine; one snapshot sample per client and tick (its last event)",
            "noise_rule": "stalled p99 <= max(A, B) + max(|A - B|, 0.1 * max(A, B)), A and B the "
            "p99s of the two normal phases",
            "latency_ms": summary,
            "m1": run_parameters(m1),
            "reference": run_parameters(ref),
            "note": "server and client processes share the machine's cores",
        },
    )


def run_parameters(run: Run) -> dict[str, Any]:
    return {
        "rss_idle_mib": round(run.rss_idle / 2**20, 2),
        "rss_loaded_mib": round(run.rss_loaded / 2**20, 2),
        "memory_per_client_kib": round(run.memory_per_client_kib, 2),
        "server_cpu_pct_of_one_core": round(run.server_cpu_s / run.wall_s * 100, 2),
        "client_cpu": run.client_cpu(),
        "deliveries": run.deliveries(),
        "server_at_end": {k: v for k, v in run.hub.items() if k != "gc_full_collections"},
        "stalled_phase_end": {
            k: v for k, v in run.stalled_seen.items() if k != "gc_full_collections"
        },
        "gc_full_collections": run.gc_pauses(),
        "bytes_received": sum(r["bytes_received"] for r in run.clients),
    }


def build_figures(
    m1: Run, ref: Run, summary: dict[str, Any], verdicts: dict[str, bool]
) -> list[Figure]:
    result: list[Figure] = []
    for kind, label in (("snapshots", "snapshot"), ("alerts", "alert")):
        ours, theirs = summary[kind]["m1_normal"], summary[kind]["reference"]
        for stat in ("p50", "p99"):
            result.append(
                Figure(
                    f"{label}_{stat}_ms",
                    ours[stat],
                    "ms",
                    target=TARGET_P99_MS if stat == "p99" else None,
                    reference=theirs[stat],
                    reference_label=REFERENCE_LABEL,
                )
            )
    memory, ref_memory = round(m1.memory_per_client_kib, 2), round(ref.memory_per_client_kib, 2)
    result.append(
        Figure(
            "memory_per_client_kib",
            memory,
            "KiB",
            target=ref_memory,
            reference=ref_memory,
            reference_label=REFERENCE_LABEL,
        )
    )
    for kind, label in (("snapshots", "snapshot"), ("alerts", "alert")):
        result.append(
            Figure(
                f"stalled_{label}_p99_ms",
                summary[kind]["m1_stalled"]["p99"],
                "ms",
                reference=summary[kind]["m1_normal"]["p99"],
                reference_label="no stalled client",
            )
        )
    result.append(
        Figure(
            "stalled_within_noise",
            1.0 if all(verdicts.values()) else 0.0,
            "yes/no",
            target=1.0,
            higher_is_better=True,
        )
    )
    result.append(
        Figure(
            "client_cpu_pct",
            m1.client_cpu()["pct_of_one_core_total"],
            "% of a core",
            reference=ref.client_cpu()["pct_of_one_core_total"],
            reference_label=REFERENCE_LABEL,
        )
    )
    result.append(
        Figure(
            "server_cpu_pct",
            round(m1.server_cpu_s / m1.wall_s * 100, 2),
            "% of a core",
            reference=round(ref.server_cpu_s / ref.wall_s * 100, 2),
            reference_label=REFERENCE_LABEL,
        )
    )
    return result


if __name__ == "__main__":
    _harness.main(NAME, (__doc__ or "").strip().splitlines()[0], measure)
