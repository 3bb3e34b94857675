"""A bare replica for the control benchmark: a ReplicaAgent in its own process until SIGTERM.

A copy of the tests' replica script, so the benchmark does not import tests. Its one command,
``bench.noop``, does nothing, so the benchmark measures the channel and not a handler.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run by path, without an install

from m1lib.control import CommandRegistry, ReplicaAgent, ReplicaFigures
from m1lib.db.session import Database
from m1lib.settings import Settings

NOOP = "bench.noop"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--replica-id", required=True)
    parser.add_argument("--db-url", required=True)
    parser.add_argument("--redis-url", default="")
    parser.add_argument("--redis-prefix", default="m1")
    parser.add_argument("--data-dir", default=".m1")
    parser.add_argument("--poll-s", type=float, default=1.0)
    parser.add_argument("--heartbeat-s", type=float, default=1.0)
    options = parser.parse_args(argv)
    settings = Settings(
        _env_file=None,
        data_dir=Path(options.data_dir),
        database={"url": options.db_url},
        redis={"url": options.redis_url or None, "prefix": options.redis_prefix},
        control={"poll_s": options.poll_s},
        replica={"id": options.replica_id, "heartbeat_s": options.heartbeat_s},
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    registry = CommandRegistry()

    @registry.register(NOOP)
    def noop(_args: dict[str, Any]) -> str:
        return "ok"

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
