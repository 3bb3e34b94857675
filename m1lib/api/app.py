"""The FastAPI application: built by a factory from settings, its live state in one lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware

from m1lib.api.deps import require_viewer
from m1lib.api.docs import install_docs
from m1lib.api.head import HeadAsGet
from m1lib.api.openapi import install_openapi
from m1lib.api.problems import install_problem_handlers
from m1lib.api.proxies import TrustedProxyMiddleware
from m1lib.api.replica import ReplicaRuntime
from m1lib.api.routes import (
    cache_policy,
    dashboard,
    events,
    healing,
    health,
    ops,
    prometheus,
    session,
    stream,
    tokens,
)
from m1lib.api.routes.page import install_dashboard
from m1lib.api.stream import StreamHub
from m1lib.settings import Settings, get_settings


def create_app(
    settings: Settings | None = None, *, runtime: ReplicaRuntime | None = None
) -> FastAPI:
    """Build the API; pass ``runtime`` to share one (tests), else one is built at start-up."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = runtime is None
        live = runtime or ReplicaRuntime.from_settings(settings)
        app.state.runtime = live
        if owned:
            live.start()
        hub = await start_stream(app, live)
        try:
            yield
        finally:
            await stop_stream(app, hub)
            if owned:
                live.close()

    app = FastAPI(
        title="M1 control plane API",
        version="0.1.0",
        summary="Capability tokens, revocation, live metrics and operations for AI agents' tool calls.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    install_problem_handlers(app)
    install_openapi(app)
    install_docs(app)
    app.add_middleware(HeadAsGet)
    install_cors(app, settings)
    prometheus.install_metrics(app)  # outermost but one: counts and times the whole stack
    if settings.trusted_proxies:  # outermost: every layer sees the client, not the balancer
        app.add_middleware(TrustedProxyMiddleware, networks=settings.trusted_proxies)
    app.include_router(health.router)
    app.include_router(session.router)
    app.include_router(ops.router)
    app.include_router(healing.router)
    app.include_router(cache_policy.router)
    app.include_router(tokens.router)
    app.include_router(events.router)
    app.include_router(prometheus.router)
    app.include_router(dashboard.router, dependencies=[Depends(require_viewer)])
    app.include_router(stream.router, dependencies=[Depends(require_viewer)])
    install_dashboard(app)
    return app


async def start_stream(app: FastAPI, runtime: ReplicaRuntime) -> StreamHub:
    """The replica's live-stream hub, on this event loop, counted by ``GET /metrics``."""
    hub = StreamHub(
        runtime.settings.stream,
        store=runtime.metrics.store,
        readiness=lambda: health.readiness_checks(runtime),
    )
    await hub.start()
    app.state.stream_hub = hub
    prometheus.set_stream_clients(app, lambda: hub.client_count)
    return hub


async def stop_stream(app: FastAPI, hub: StreamHub) -> None:
    """End every stream cleanly before the runtime under it closes."""
    prometheus.set_stream_clients(app, None)
    await hub.close()
    app.state.stream_hub = None


def install_cors(app: FastAPI, settings: Settings) -> None:
    """Only the configured origins; credentials never go with a wildcard origin."""
    origins = settings.cors.origins
    if not origins:
        return
    app.add_middleware(
        CORSMiddleware,
        allow_origins=origins,
        allow_credentials="*" not in origins,
        allow_methods=["GET", "POST", "DELETE"],
        allow_headers=["Authorization", "Content-Type", "Last-Event-ID"],
        max_age=600,
    )
