"""The other replica of the revocation benchmark: it notes when each expected jti becomes denied.

It starts a RevocationManager with its threads (first load, resync, Redis subscriber), prints
``ready`` once loaded and subscribed, then, for each jti of ``--jtis-file`` in order, polls
``is_revoked`` every ``--poll-us`` microseconds and records ``time.monotonic_ns()`` when it turns
true (CLOCK_MONOTONIC is one clock for every process on the machine). The list goes to
``--out-file`` as JSON (None for a jti not seen within ``--deadline-s``).

A copy of nothing in tests/: benchmarks do not import tests.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run by path, without an install

from m1lib.db.session import Database
from m1lib.revocation import RevocationManager
from m1lib.settings import Settings

READY_DEADLINE_S = 60.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--db-url", required=True)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--redis-prefix", required=True)
    parser.add_argument("--jtis-file", type=Path, required=True)
    parser.add_argument("--out-file", type=Path, required=True)
    parser.add_argument("--poll-us", type=float, default=20.0)
    parser.add_argument("--deadline-s", type=float, default=15.0)
    options = parser.parse_args(argv)
    settings = Settings(
        _env_file=None,
        database={"url": options.db_url},
        redis={"url": options.redis_url, "prefix": options.redis_prefix},
    )
    jtis: list[str] = json.loads(options.jtis_file.read_text())
    db = Database(settings)
    manager = RevocationManager(settings=settings, db=db)
    manager.start()
    try:
        deadline = time.monotonic() + READY_DEADLINE_S
        while not (manager.ready and manager.status().subscribed):
            if time.monotonic() > deadline:
                print("not ready", flush=True)
                return 1
            time.sleep(0.01)
        print("ready", flush=True)
        pause = options.poll_us / 1e6
        seen: list[int | None] = []
        for jti in jtis:
            give_up = time.monotonic() + options.deadline_s
            while not manager.is_revoked(jti):
                if time.monotonic() > give_up:
                    break
                time.sleep(pause)
            seen.append(time.monotonic_ns() if manager.is_revoked(jti) else None)
        options.out_file.write_text(json.dumps(seen))
    finally:
        manager.close()
        db.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
