"""``python -m m1lib.api``: one API replica under uvicorn, as `m1 up` starts it."""

from __future__ import annotations

import uvicorn

from m1lib.api.app import create_app
from m1lib.api.stream.server import StreamAwareServer
from m1lib.logs import configure_logging, uvicorn_log_config
from m1lib.settings import get_settings


def main() -> None:
    settings = get_settings()
    configure_logging(settings)
    ssl: dict[str, str] = {}
    if settings.tls.cert_file is not None and settings.tls.key_file is not None:
        ssl = {
            "ssl_certfile": str(settings.tls.cert_file),
            "ssl_keyfile": str(settings.tls.key_file),
        }
    config = uvicorn.Config(
        create_app(settings),
        host=settings.api.host,
        port=settings.api.port,
        log_config=uvicorn_log_config(settings),
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=5,
        **ssl,  # type: ignore[arg-type]
    )
    StreamAwareServer(
        config, gc_young_threshold=settings.api.gc_young_threshold
    ).run()  # ends live streams at once on SIGTERM/SIGINT


if __name__ == "__main__":
    main()
