"""Control channel: how long from writing a command until two replicas have applied and acked it.

Two replica processes run against a PostgreSQL database of the benchmark's own (created and dropped
here) and Redis (own key prefix). Commands are issued one at a time, after a random pause of up to
50 ms; each sample is one replica's ack: its ``applied_at`` (replica's clock) minus the moment
``issue_command`` returned (this process's clock; same machine). Run twice: woken by Redis pub/sub
(poll_s 1 s, so polling cannot help), and polling only (no Redis, poll_s 0.05 s) as the reference.
Target: pub/sub p99 <= 50 ms.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import _harness
import redis
from _harness import Figure, Measured, percentiles_ms
from sqlalchemy import text

from m1lib.control import CommandAck, acks_for, control_channel, issue_command, live_replicas
from m1lib.db.migrate import upgrade
from m1lib.db.session import Database
from m1lib.settings import Settings
from tests.services import own_database

NAME = "control"
REPLICA_SCRIPT = Path(__file__).resolve().parent / "_replica_proc.py"
TARGET_P99_MS = 50.0
POLLING_POLL_S = 0.05
PUBSUB_POLL_S = 1.0
COMMAND_DEADLINE_S = 10.0
START_DEADLINE_S = 30.0


class Replicas:
    """The two replica processes of one run; always terminated, then killed if they linger."""

    def __init__(self, workdir: Path, settings: Settings, ids: list[str]) -> None:
        self.workdir = workdir
        self.settings = settings
        self.ids = ids
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def start(self) -> None:
        for replica_id in self.ids:
            log = (self.workdir / f"{replica_id}.log").open("ab")
            command = [
                sys.executable, str(REPLICA_SCRIPT), "--replica-id", replica_id,
                "--db-url", self.settings.database_url,
                "--redis-url", self.settings.redis_url or "",
                "--redis-prefix", self.settings.redis.prefix,
                "--data-dir", str(self.workdir / "data"),
                "--poll-s", str(self.settings.control.poll_s),
            ]  # fmt: skip
            self.processes[replica_id] = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT
            )
            log.close()

    def check_alive(self) -> None:
        for replica_id, process in self.processes.items():
            if process.poll() is not None:
                log = (self.workdir / f"{replica_id}.log").read_text(errors="replace")
                raise RuntimeError(f"replica {replica_id} exited ({process.returncode}):\n{log}")

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        self.processes.clear()


def wait_ready(db: Database, replicas: Replicas, *, pubsub: bool) -> None:
    """Both heartbeats from these very processes, and (pub/sub) both subscribed."""
    client = redis.Redis.from_url(_harness.REDIS_URL) if pubsub else None
    channel = control_channel(replicas.settings)
    deadline = time.monotonic() + START_DEADLINE_S
    try:
        while True:
            replicas.check_alive()
            pids = {r.id: r.pid for r in live_replicas(db, 60)}
            ready = all(pids.get(rid) == p.pid for rid, p in replicas.processes.items())
            if ready and client is not None:
                counts = dict(client.pubsub_numsub(channel))
                ready = counts.get(channel.encode(), 0) == len(replicas.ids)
            if ready:
                return
            if time.monotonic() > deadline:
                raise RuntimeError("replicas did not become ready in time")
            time.sleep(0.05)
    finally:
        if client is not None:
            client.close()


def run_mode(
    db: Database, settings: Settings, workdir: Path, *, mode: str, commands: int, warmup: int
) -> tuple[list[float], list[float]]:
    """Issue ``warmup + commands`` commands; returns (ack latencies, issue durations) in seconds."""
    ids = [f"bench-{mode}-{n}-{uuid.uuid4().hex[:6]}" for n in (1, 2)]
    replicas = Replicas(workdir, settings, ids)
    latencies: list[float] = []
    issue_times: list[float] = []
    try:
        replicas.start()
        wait_ready(db, replicas, pubsub=settings.redis_url is not None)
        for index in range(warmup + commands):
            # Issuing right after the last ack would land just after a poll, every time: a random
            # pause spreads issue times over the poll period, as real commands are.
            time.sleep(random.uniform(0, POLLING_POLL_S))
            began = time.perf_counter()
            command_id = issue_command(
                db, "bench.noop", {"n": index}, created_by="bench", ttl_s=300, settings=settings
            )
            issued_at = datetime.now(UTC)
            issue_duration = time.perf_counter() - began
            acks = wait_acks(db, replicas, command_id)
            if index < warmup:
                continue
            issue_times.append(issue_duration)
            for ack in acks:
                if not ack.ok:
                    raise RuntimeError(
                        f"{ack.replica_id} failed command {command_id}: {ack.detail}"
                    )
                # A replica can ack while issue_command still closes its Redis client: count 0.
                latencies.append(max(0.0, (ack.applied_at - issued_at).total_seconds()))
    finally:
        replicas.stop()
    with db.transaction() as session:  # the next mode's replicas must not catch up on these
        session.execute(text("DELETE FROM control_commands"))
        session.execute(text("DELETE FROM replicas"))
    return latencies, issue_times


def wait_acks(db: Database, replicas: Replicas, command_id: int) -> list[CommandAck]:
    deadline = time.monotonic() + COMMAND_DEADLINE_S
    while True:
        acks = acks_for(db, command_id)
        if len(acks) == len(replicas.ids):
            return acks
        if time.monotonic() > deadline:
            replicas.check_alive()
            raise RuntimeError(
                f"command {command_id}: {len(acks)} acks after {COMMAND_DEADLINE_S} s"
            )
        time.sleep(0.002)


def measure(smoke: bool) -> Measured:
    commands, warmup = (20, 3) if smoke else (500, 10)
    database = f"m1_bench_{uuid.uuid4().hex[:10]}"
    prefix = f"m1bench:{uuid.uuid4().hex[:10]}"
    try:
        with own_database(database) as url, tempfile.TemporaryDirectory(prefix="m1-bench-") as tmp:
            workdir = Path(tmp)
            base: dict[str, Any] = {
                "_env_file": None,
                "data_dir": workdir / "data",
                "database": {"url": url},
            }
            pubsub = Settings(
                **base,
                redis={"url": _harness.REDIS_URL, "prefix": prefix},
                control={"poll_s": PUBSUB_POLL_S},
            )
            polling = Settings(**base, control={"poll_s": POLLING_POLL_S})
            db = Database(pubsub)
            try:
                upgrade(db)
                woken, issue_times = run_mode(
                    db, pubsub, workdir, mode="pubsub", commands=commands, warmup=warmup
                )
                polled, _ = run_mode(
                    db, polling, workdir, mode="polling", commands=commands, warmup=warmup
                )
            finally:
                db.dispose()
    finally:
        _harness.clean_redis(prefix)
    return Measured(
        figures=figures(woken, polled, issue_times),
        parameters={
            "commands": commands,
            "warmup_commands": warmup,
            "replicas": 2,
            "samples_per_mode": len(woken),
            "database": "postgresql",
            "pubsub_poll_s": PUBSUB_POLL_S,
            "polling_poll_s": POLLING_POLL_S,
            "latency": "ack applied_at minus issue_command return, same machine clock",
        },
    )


def figures(woken: list[float], polled: list[float], issue_times: list[float]) -> list[Figure]:
    pub, poll = percentiles_ms(woken), percentiles_ms(polled)
    result: list[Figure] = []
    for stat in ("p50", "p95", "p99", "max"):
        result.append(
            Figure(
                f"pubsub_apply_{stat}_ms",
                round(pub[stat], 3),
                "ms",
                target=TARGET_P99_MS if stat == "p99" else None,
                reference=round(poll[stat], 3),
                reference_label=f"polling only, poll_s={POLLING_POLL_S}",
            )
        )
    for stat in ("p50", "p95", "p99", "max"):
        result.append(Figure(f"polling_apply_{stat}_ms", round(poll[stat], 3), "ms"))
    result.append(Figure("issue_p50_ms", round(percentiles_ms(issue_times)["p50"], 3), "ms"))
    return result


if __name__ == "__main__":
    _harness.main(NAME, (__doc__ or "").strip().splitlines()[0], measure)
