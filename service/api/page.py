"""GET /: a small upload page for people trying the service in a browser. Plain HTML and a
little vanilla JS, shipped inside the package: no CDN, works offline."""

from __future__ import annotations

from functools import cache
from importlib.resources import files

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

router = APIRouter(tags=["page"])


@cache
def _page() -> str:
    return files("service.api").joinpath("static/index.html").read_text(encoding="utf-8")


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def index() -> HTMLResponse:
    return HTMLResponse(_page())
