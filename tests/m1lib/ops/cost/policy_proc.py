"""A process that keeps calling ``m1lib.cached_call`` for one tool until SIGTERM: an API replica
(a whole :class:`ReplicaRuntime`, so the ``cache.policy.reload`` command reaches it) or a service
(the process cache built from M1_* variables, following the policy by its periodic refresh).

Run from the repository root: ``python -m tests.m1lib.ops.cost.policy_proc --role replica
--name r1 --tool t --db-url ... --redis-url ... --redis-prefix ... --data-dir ...``; a service
takes its settings from the environment instead (the test sets them). Each call caches under key
``k-<name>``, so the test reads the TTL this process put on its own Redis key.
"""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path

import m1lib
from m1lib import process_cache
from m1lib.api.replica import ReplicaRuntime
from m1lib.settings import Settings


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--role", choices=("replica", "service"), required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--tool", required=True)
    parser.add_argument("--db-url", default="")
    parser.add_argument("--redis-url", default="")
    parser.add_argument("--redis-prefix", default="m1")
    parser.add_argument("--data-dir", default=".m1")
    return parser.parse_args(argv)


def replica_settings(options: argparse.Namespace) -> Settings:
    return Settings(
        _env_file=None,
        data_dir=Path(options.data_dir),
        database={"url": options.db_url},
        redis={"url": options.redis_url, "prefix": options.redis_prefix},
        control={"poll_s": 1.0},
        replica={"id": options.name, "heartbeat_s": 0.2},
        # short default TTL: entries are refetched often; the policy only by the command
        cache={"default_ttl_s": 0.3, "policy_refresh_s": 600},
    )


def main(argv: list[str] | None = None) -> int:
    options = parse(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    runtime = None
    if options.role == "replica":
        runtime = ReplicaRuntime.from_settings(replica_settings(options))
        runtime.start()
    try:
        while not stop.wait(0.05):
            m1lib.cached_call(options.tool, f"k-{options.name}", lambda: options.name)
    finally:
        if runtime is not None:
            runtime.close()
        else:
            process_cache.install_cache(None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
