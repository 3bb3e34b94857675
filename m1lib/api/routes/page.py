"""``GET /dashboard``: the live page, behind the session login, working offline.

The page is static HTML, CSS and one ES module (``m1lib/api/static/dashboard/``) plus the vendored
uPlot (``static/vendor/uplot/``), all shipped inside the package and served from
``/dashboard/assets``: nothing comes from a CDN. The page reads the stream and queries with the
browser's session cookie. Every response here carries a strict Content-Security-Policy (scripts,
styles and connections from this origin only, no inline script), so text an event carries can
never run as code even if it reached the DOM as markup.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Final

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.types import Scope

from m1lib.api.deps import session_principal
from m1lib.auth import Permission

STATIC_DIR: Final = Path(__file__).resolve().parent.parent / "static"
PAGE_DIR: Final = STATIC_DIR / "dashboard"
ASSETS: Final = "/dashboard/assets"
LOGIN: Final = "/dashboard/login"

CSP: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}

router = APIRouter(tags=["dashboard"], include_in_schema=False)


class _Assets(StaticFiles):
    """The package's static files, with the page's security headers on each."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(SECURITY_HEADERS)
        response.headers.setdefault("Cache-Control", "no-cache")  # revalidate after an upgrade
        return response


@cache
def _html(name: str) -> str:
    return (PAGE_DIR / name).read_text(encoding="utf-8")


def _page(name: str) -> HTMLResponse:
    return HTMLResponse(_html(name), headers={**SECURITY_HEADERS, "Cache-Control": "no-store"})


@router.get("/dashboard")
def dashboard(request: Request) -> Response:
    """The page for a session that may read; anyone else is sent to the key form."""
    principal = session_principal(request)
    if principal is None or not principal.role.allows(Permission.READ):
        return RedirectResponse(LOGIN, status_code=303, headers={"Cache-Control": "no-store"})
    return _page("index.html")


@router.get(LOGIN)
def login_form() -> Response:
    """A key form that posts the key to ``POST /api/m1/session`` and then opens the page."""
    return _page("login.html")


def install_dashboard(app: FastAPI) -> None:
    app.mount(ASSETS, _Assets(directory=STATIC_DIR), name="dashboard-assets")
    app.include_router(router)
