"""GET /: a small upload page for people trying the service in a browser. Plain HTML, one
stylesheet and a little vanilla JS, shipped inside the package: no CDN, works offline.

The page is served with a strict Content-Security-Policy: scripts and styles only from the
service itself (no inline code, so an injected string cannot run), images from itself or the
blob: preview of the user's own file, fetches to itself only, and no framing by other sites.
Its HTML lives apart from the static assets (templates/, not static/), so GET / is the only way
to it: /static/ serves the stylesheet and the script, each with a CSP that forbids everything
and framing, and no HTML at all."""

from __future__ import annotations

import os
from functools import cache
from importlib.resources import files

from fastapi import APIRouter, FastAPI
from fastapi.responses import HTMLResponse
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

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
# A stylesheet or script needs no policy of its own; this one makes sure that whatever else a
# file under /static/ might be, it cannot run, load anything or be framed.
ASSET_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
}
_ASSET_SUFFIXES = (".css", ".js")


@cache
def _page() -> str:
    return files("service.http").joinpath("templates/index.html").read_text(encoding="utf-8")


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def index() -> HTMLResponse:
    return HTMLResponse(_page(), headers=PAGE_HEADERS)


class PageAssets(StaticFiles):
    """The page's stylesheet and script, with ASSET_HEADERS; any other file is not found."""

    def file_response(
        self, full_path: str | os.PathLike[str], stat_result: os.stat_result, scope: Scope,
        status_code: int = 200,
    ) -> Response:  # fmt: skip
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers.update(ASSET_HEADERS)
        return response

    def lookup_path(self, path: str) -> tuple[str, os.stat_result | None]:
        if not path.endswith(_ASSET_SUFFIXES):
            return "", None
        return super().lookup_path(path)


def install_page(app: FastAPI) -> None:
    app.include_router(router)
    # One mount, one route template in the metrics ("/static"), whatever the file.
    app.mount(STATIC_URL, PageAssets(packages=[("service.http", "static")]), name="page-static")
