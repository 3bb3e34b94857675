"""The stream benchmark's reference: a plain sse-starlette broadcaster, as one would first write it.

A Starlette app under uvicorn (same settings as the M1 replica). Each client has an unbounded
``asyncio.Queue``; a ticker wakes at each tick boundary (``floor(now / tick) * tick``, as M1's
hub does) and puts the tick into every queue, and each client's generator JSON-encodes the four
snapshot events itself: the per-client encoding of a plain implementation. No figures are
computed: the payloads are M1's, captured from its stream earlier in the same run (``--payload``),
so both servers send the same bytes. ``POST /alert`` stamps an alert with ``time.time()`` (its
id ``<µs>-ref``, as M1's alert ids start) and puts it into every queue; ``GET /stats`` counts
the clients and full garbage collections.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import uvicorn
from _gc_pauses import GcPauses
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

SNAPSHOT_KINDS = ("cache_metrics", "policy_decisions", "tool_executions", "cost_update")


def iso_time(seconds: float) -> str:
    return (
        time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
        + f".{int(seconds * 1000) % 1000:03d}Z"
    )


def build(payload: dict[str, Any], tick_ms: int) -> Starlette:
    queues: set[asyncio.Queue[tuple[str, str, dict[str, Any]]]] = set()
    pauses = GcPauses()

    def broadcast(item: tuple[str, str, dict[str, Any]]) -> None:
        for queue in queues:
            queue.put_nowait(item)

    async def ticker() -> None:
        next_tick = (int(time.time() * 1000) // tick_ms + 1) * tick_ms
        while True:
            now = time.time()
            if now * 1000 < next_tick:  # uvloop's timers are ms-grained: it may wake early
                await asyncio.sleep(next_tick / 1000 - now)
                continue
            tick = int(now * 1000) // tick_ms * tick_ms  # a late wake-up names its own tick
            next_tick = tick + tick_ms
            stamp = iso_time(tick / 1000)
            for kind in SNAPSHOT_KINDS:
                envelope = {"type": kind, "timestamp": stamp, "data": payload[kind]}
                broadcast((kind, str(tick), envelope))

    async def stream(request: Request) -> EventSourceResponse:
        queue: asyncio.Queue[tuple[str, str, dict[str, Any]]] = asyncio.Queue()
        queues.add(queue)

        async def events() -> AsyncIterator[ServerSentEvent]:
            try:
                while True:
                    kind, ident, envelope = await queue.get()
                    yield ServerSentEvent(
                        data=json.dumps(envelope, separators=(",", ":")), event=kind, id=ident,
                        sep="\n",
                    )  # fmt: skip
            finally:
                queues.discard(queue)

        return EventSourceResponse(events(), sep="\n", ping=15)

    async def alert(request: Request) -> JSONResponse:
        now = time.time()
        envelope = {
            "type": "error_alert",
            "timestamp": iso_time(now),
            "data": {"level": "warning", "message": "benchmark alert", "source": "bench",
                     "metadata": {}},
        }  # fmt: skip
        broadcast(("error_alert", f"{round(now * 1e6)}-ref", envelope))
        return JSONResponse({"clients": len(queues)})

    async def stats(request: Request) -> JSONResponse:
        return JSONResponse({"clients": len(queues), "gc_full_collections": pauses.figures()})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        task = asyncio.create_task(ticker())
        yield
        task.cancel()

    return Starlette(
        routes=[
            Route("/stream", stream),
            Route("/alert", alert, methods=["POST"]),
            Route("/stats", stats),
        ],
        lifespan=lifespan,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--payload", type=Path, required=True)
    parser.add_argument("--tick-ms", type=int, default=500)
    options = parser.parse_args(argv)
    payload = json.loads(options.payload.read_text())
    config = uvicorn.Config(
        build(payload, options.tick_ms),
        host="127.0.0.1",
        port=options.port,
        log_level="warning",
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=5,
    )
    uvicorn.Server(config).run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
