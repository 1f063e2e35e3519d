"""/docs (Swagger UI) and /redoc (ReDoc) served with their JavaScript and CSS from this service,
not from a CDN: FastAPI's default pages load their assets from the internet and so render blank
on a machine without it. The assets come from the ``fastapi-offline`` package's static folder
(Swagger UI 5, which renders OpenAPI 3.1 as FastAPI emits it, and ReDoc 2); only that folder is
used, the pages are FastAPI's own ``get_swagger_ui_html`` / ``get_redoc_html`` pointed at it.
The app must be created with ``docs_url=None, redoc_url=None``; /openapi.json is untouched.

Each page is served with a Content-Security-Policy that fits it: scripts from the service only,
plus the page's one inline bootstrap script by its SHA-256 hash (no 'unsafe-inline' for
scripts); inline styles allowed (both UIs set them at run time), images from the service or
data: URIs, fetches to the service only (the spec, and Swagger's "Try it out"), ReDoc's search
worker from a blob: URL, and no framing. Swagger UI's online validator is turned off: its badge
is an image from another site.
"""

from __future__ import annotations

import base64
import hashlib
import re

from fastapi import FastAPI, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

DOCS_URL = "/docs"
REDOC_URL = "/redoc"
STATIC_URL = "/docs/static"
# The package and the folder inside it that hold swagger-ui-bundle.js, swagger-ui.css,
# redoc.standalone.js and favicon.png.
_ASSETS_PACKAGE = ("fastapi_offline", "static")
_INLINE_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.DOTALL)
_POLICY = (
    "default-src 'none'; script-src 'self'{hashes}; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; worker-src 'self' blob:; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def with_policy(page: HTMLResponse) -> HTMLResponse:
    """``page`` with a CSP that lets exactly its own inline scripts run (by hash)."""
    hashes = "".join(
        f" 'sha256-{base64.b64encode(hashlib.sha256(script).digest()).decode()}'"
        for script in _INLINE_SCRIPT.findall(bytes(page.body))
    )
    page.headers["Content-Security-Policy"] = _POLICY.format(hashes=hashes)
    page.headers["X-Frame-Options"] = "DENY"
    return page


def install_docs(app: FastAPI) -> None:
    if app.docs_url is not None or app.redoc_url is not None:
        raise ValueError("create the app with docs_url=None and redoc_url=None")
    openapi_url = app.openapi_url
    if openapi_url is None:
        raise ValueError("the docs pages need the app's openapi_url")
    oauth2_redirect_url = app.swagger_ui_oauth2_redirect_url

    # One mount, one route template in the metrics ("/docs/static"), whatever the file.
    app.mount(STATIC_URL, StaticFiles(packages=[_ASSETS_PACKAGE]), name="docs-static")

    def urls(request: Request) -> tuple[str, str]:
        # Behind a proxy that strips a prefix, the browser needs that prefix on every URL.
        root = str(request.scope.get("root_path", "")).rstrip("/")
        return root + openapi_url, root + STATIC_URL

    @app.get(DOCS_URL, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        schema, static = urls(request)
        page = get_swagger_ui_html(
            openapi_url=schema,
            title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=oauth2_redirect_url,
            swagger_js_url=f"{static}/swagger-ui-bundle.js",
            swagger_css_url=f"{static}/swagger-ui.css",
            swagger_favicon_url=f"{static}/favicon.png",
            swagger_ui_parameters={"validatorUrl": None, **(app.swagger_ui_parameters or {})},
        )
        return with_policy(page)

    if oauth2_redirect_url is not None:

        @app.get(oauth2_redirect_url, include_in_schema=False)
        async def swagger_ui_oauth2_redirect() -> HTMLResponse:
            return with_policy(get_swagger_ui_oauth2_redirect_html())

    @app.get(REDOC_URL, include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        schema, static = urls(request)
        page = get_redoc_html(
            openapi_url=schema,
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{static}/redoc.standalone.js",
            redoc_favicon_url=f"{static}/favicon.png",
            with_google_fonts=False,  # a font CDN as well: ReDoc falls back to system fonts
        )
        return with_policy(page)
