"""OpenAPI docs at /docs with Swagger UI served from the package, not a CDN.

Operators often run M1 where browsers cannot reach the internet; a docs page that needs a CDN
would be blank there.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS = "/docs/assets"
# fastapi-offline ships a current Swagger UI (OpenAPI 3.1, which FastAPI emits); we use only its files.
SWAGGER_DIR = Path(importlib.util.find_spec("fastapi_offline").origin).parent / "static"  # type: ignore[arg-type, union-attr]


def install_docs(app: FastAPI) -> None:
    app.mount(ASSETS, StaticFiles(directory=SWAGGER_DIR), name="swagger-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} - docs",
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS}/favicon.png",
        )
