"""The M1 side of the stream benchmark: one API replica as ``python -m m1lib.api`` runs it.

The same ``create_app`` under the same ``StreamAwareServer``, on SQLite in ``--data-dir``, with a
viewer key made for the run (written to ``--key-file``), rate limits raised past the benchmark's
connections, and two benchmark-only routes on the loopback address:

- ``POST /bench/alert``: ``m1lib.raise_alert`` in this process (the alert's time, and so its
  id, is set there, when raised);
- ``GET /bench/hub``: the hub's client, dropped-client and tick counts, and this process's full
  garbage collections (count, total and longest pause: they hold the event loop too).

``--feed-per-s`` events a second (spread over the four snapshot metrics) are recorded by a
thread, so each tick computes its figures over a window that is not empty.
"""

from __future__ import annotations

import argparse
import random
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run by path, without an install

import uvicorn
from _gc_pauses import GcPauses

from m1lib import auth, raise_alert
from m1lib.api.app import create_app
from m1lib.api.stream.hub import StreamHub
from m1lib.api.stream.server import StreamAwareServer
from m1lib.db import migrate
from m1lib.db.session import Database
from m1lib.metrics import pipeline
from m1lib.settings import Settings

TOOLS = ("search", "fetch", "summarise", "translate", "sql", "email", "calendar")
MODELS = ("small", "medium", "large")


def feed(stop: threading.Event, per_s: float) -> None:
    """Record ``per_s`` events a second into this replica's metrics runtime, in small bursts."""
    rng = random.Random(1)
    burst = max(1, round(per_s / 20))
    while not stop.wait(burst / per_s):
        runtime = pipeline._default
        if runtime is None:
            continue
        record = runtime.recorder.record_event
        for _ in range(burst):
            tool = rng.choice(TOOLS)
            which = rng.randrange(4)
            if which == 0:
                record("cache_operations", cache="tools", toolName=tool,
                       op=rng.choice(("get", "get", "set")), hit=rng.random() < 0.7,
                       latencyMs=rng.uniform(0.1, 3))  # fmt: skip
            elif which == 1:
                allowed = rng.random() < 0.9
                record("policy_decisions", toolName=tool, scope="read", allowed=allowed,
                       reason="granted" if allowed else "scope_missing", subject="agent-1",
                       checkMs=rng.uniform(0.01, 0.2))  # fmt: skip
            elif which == 2:
                record("tool_executions", toolName=tool, scope="execute",
                       success=rng.random() < 0.95, durationMs=rng.uniform(5, 500))  # fmt: skip
            else:
                record("cost_updates", model=rng.choice(MODELS), toolName=tool,
                       component="agent", inputTokens=rng.randrange(100, 4000),
                       outputTokens=rng.randrange(10, 800), costUsd=rng.uniform(1e-4, 0.02))  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--key-file", type=Path, required=True)
    parser.add_argument("--tick-ms", type=int, default=500)
    parser.add_argument("--max-clients", type=int, default=2000)
    parser.add_argument("--feed-per-s", type=float, default=0.0)
    options = parser.parse_args(argv)
    limit = 1_000_000
    settings = Settings(
        _env_file=None,
        data_dir=options.data_dir,
        api={"host": "127.0.0.1", "port": options.port},
        jwt={"secret": "b" * 40},
        log={"level": "WARNING"},
        stream={"tick_ms": options.tick_ms, "max_clients": options.max_clients},
        ratelimit={f"{name}_per_min": limit for name in ("read", "query", "admin", "login")},
    )
    db = Database(settings)
    migrate.upgrade(db)
    key = auth.create_credential(db, "bench-viewer", "viewer", created_by="bench")
    db.dispose()
    options.key_file.write_text(key)

    app = create_app(settings)
    pauses = GcPauses()
    raised = 0

    @app.post("/bench/alert", include_in_schema=False)
    async def bench_alert() -> dict[str, Any]:
        nonlocal raised
        raised += 1
        raise_alert("warning", "bench", f"benchmark alert {raised}", metadata={"n": raised})
        return {"raised": raised}

    @app.get("/bench/hub", include_in_schema=False)
    async def bench_hub() -> dict[str, Any]:
        hub: StreamHub | None = getattr(app.state, "stream_hub", None)
        counts = (hub.client_count, hub.dropped_clients, hub.ticks) if hub else (0, 0, 0)
        return dict(zip(("clients", "dropped", "ticks"), counts, strict=True)) | {
            "gc_full_collections": pauses.figures()
        }

    stop = threading.Event()
    if options.feed_per_s > 0:
        threading.Thread(target=feed, args=(stop, options.feed_per_s), daemon=True).start()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=options.port,
        log_level="warning",
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=5,
    )
    try:
        StreamAwareServer(config, gc_young_threshold=settings.api.gc_young_threshold).run()
    finally:
        stop.set()
        time.sleep(0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
