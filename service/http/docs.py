"""/docs (Swagger UI) and /redoc (ReDoc) served with their JavaScript and CSS from this service,
not from a CDN: FastAPI's default pages load their assets from the internet and so render blank
on a machine without it. The assets come from the ``fastapi-offline`` package's static folder
(Swagger UI 5, which renders OpenAPI 3.1 as FastAPI emits it, and ReDoc 2); only that folder is
used, the pages are FastAPI's own ``get_swagger_ui_html`` / ``get_redoc_html`` pointed at it.
The app must be created with ``docs_url=None, redoc_url=None``; /openapi.json is untouched.
"""

from __future__ import annotations

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
        return get_swagger_ui_html(
            openapi_url=schema,
            title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=oauth2_redirect_url,
            swagger_js_url=f"{static}/swagger-ui-bundle.js",
            swagger_css_url=f"{static}/swagger-ui.css",
            swagger_favicon_url=f"{static}/favicon.png",
            swagger_ui_parameters=app.swagger_ui_parameters,
        )

    if oauth2_redirect_url is not None:

        @app.get(oauth2_redirect_url, include_in_schema=False)
        async def swagger_ui_oauth2_redirect() -> HTMLResponse:
            return get_swagger_ui_oauth2_redirect_html()

    @app.get(REDOC_URL, include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        schema, static = urls(request)
        return get_redoc_html(
            openapi_url=schema,
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{static}/redoc.standalone.js",
            redoc_favicon_url=f"{static}/favicon.png",
            with_google_fonts=False,  # a font CDN as well: ReDoc falls back to system fonts
        )
