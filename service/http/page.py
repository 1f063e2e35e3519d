"""GET /: a small upload page for people trying the service in a browser. Plain HTML, one
stylesheet and a little vanilla JS, shipped inside the package: no CDN, works offline.

The page is served with a strict Content-Security-Policy: scripts and styles only from the
service itself (no inline code, so an injected string cannot run), images from itself or the
blob: preview of the user's own file, fetches to itself only, and no framing by other sites."""

from __future__ import annotations

from functools import cache
from importlib.resources import files

from fastapi import APIRouter, FastAPI
from fastapi.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

router = APIRouter(tags=["page"])

STATIC_URL = "/static"
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; "
        "connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",  # for browsers that predate frame-ancestors
    "Referrer-Policy": "no-referrer",
}


@cache
def _page() -> str:
    return files("service.http").joinpath("static/index.html").read_text(encoding="utf-8")


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def index() -> HTMLResponse:
    return HTMLResponse(_page(), headers=PAGE_HEADERS)


def install_page(app: FastAPI) -> None:
    app.include_router(router)
    # One mount, one route template in the metrics ("/static"), whatever the file.
    app.mount(STATIC_URL, StaticFiles(packages=[("service.http", "static")]), name="page-static")
