"""A stand-in API replica for the control tests: a ReplicaAgent in its own process until SIGTERM.

Run as ``python -m tests.m1lib.replica_proc --replica-id r1 --db-url ... [--redis-url ...]`` from
the repository root. It registers ``test.record``, which appends ``args["token"]`` to ``--out`` and
returns ``pid=<pid>``, so a test can tell which process applied a command.
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
from pathlib import Path
from typing import Any

from m1lib.control import CommandRegistry, ReplicaAgent, ReplicaFigures
from m1lib.db.session import Database
from m1lib.settings import Settings

RECORD = "test.record"


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--replica-id", required=True)
    parser.add_argument("--db-url", required=True)
    parser.add_argument("--redis-url", default="")
    parser.add_argument("--redis-prefix", default="m1")
    parser.add_argument("--data-dir", default=".m1")
    parser.add_argument("--poll-s", type=float, default=1.0)
    parser.add_argument("--heartbeat-s", type=float, default=0.2)
    parser.add_argument("--out", type=Path, default=None)
    return parser.parse_args(argv)


def build_settings(options: argparse.Namespace) -> Settings:
    return Settings(
        _env_file=None,
        data_dir=Path(options.data_dir),
        database={"url": options.db_url},
        redis={"url": options.redis_url or None, "prefix": options.redis_prefix},
        control={"poll_s": options.poll_s},
        replica={"id": options.replica_id, "heartbeat_s": options.heartbeat_s},
    )


def main(argv: list[str] | None = None) -> int:
    options = parse(argv)
    settings = build_settings(options)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    registry = CommandRegistry()

    @registry.register(RECORD)
    def record(args: dict[str, Any]) -> str:
        if options.out is not None:
            with options.out.open("a", encoding="utf-8") as handle:
                handle.write(f"{args.get('token', '')}\n")
        return f"pid={os.getpid()}"

    db = Database(settings)
    agent = ReplicaAgent(settings, db=db, registry=registry, figures=ReplicaFigures)
    agent.start()
    try:
        while not stop.wait(0.5):
            pass
    finally:
        agent.stop()
        db.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
