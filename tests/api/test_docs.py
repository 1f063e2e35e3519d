"""/docs and /redoc work without internet: every script, stylesheet and icon that the pages load
is served by the service itself (no CDN host), and each of those URLs answers with the asset.
Each page carries a Content-Security-Policy that lets only its own inline script run (by hash);
tests/e2e/test_docs_csp.py shows in chromium that the pages still render under it."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import AsyncIterator
from html.parser import HTMLParser

import httpx
import pytest

from service.settings import Settings
from tests.api.conftest import Served, fake_factory, serve

pytestmark = pytest.mark.anyio

# Content type by extension; .js is text/javascript or application/javascript by Python version.
_TYPES = {
    ".js": ("text/javascript", "application/javascript"),
    ".css": ("text/css",),
    ".png": ("image/png",),
}


class _AssetLinks(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        wanted = {"script": "src", "link": "href"}.get(tag)
        for name, value in attrs:
            if name == wanted and value:
                self.urls.append(value)


def asset_urls(html: str) -> list[str]:
    parser = _AssetLinks()
    parser.feed(html)
    return parser.urls


async def assert_served_locally(client: httpx.AsyncClient, page: str, prefix: str = "") -> None:
    response = await client.get(prefix + page)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/html")
    urls = asset_urls(response.text)
    assert urls, f"{page} loads no assets?"
    for url in urls:
        # A path on this service: no scheme, no host, not protocol-relative.
        assert url.startswith(f"{prefix}/docs/static/"), url
        assert "://" not in url
        asset = await client.get(url)
        assert asset.status_code == 200, url
        extension = url[url.rfind(".") :]
        assert asset.headers["Content-Type"].split(";")[0] in _TYPES[extension], url
        assert len(asset.content) > 1000, url


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    async with serve(Settings(), fake_factory()) as served:
        yield served


async def test_swagger_ui_assets_are_served_by_the_service(served: Served) -> None:
    await assert_served_locally(served.client, "/docs")
    page = (await served.client.get("/docs")).text
    assert "swagger-ui-bundle.js" in page
    assert "swagger-ui.css" in page
    assert "url: '/openapi.json'" in page


async def test_redoc_assets_are_served_by_the_service(served: Served) -> None:
    await assert_served_locally(served.client, "/redoc")
    page = (await served.client.get("/redoc")).text
    assert "redoc.standalone.js" in page
    assert "fonts.googleapis.com" not in page


async def test_oauth2_redirect_page_and_openapi_schema_unchanged(served: Served) -> None:
    redirect = await served.client.get("/docs/oauth2-redirect")
    schema = await served.client.get("/openapi.json")
    assert redirect.status_code == 200
    assert schema.status_code == 200
    assert "/v1/classify" in schema.json()["paths"]
    # The docs pages and their assets stay out of the API schema.
    assert not any(path.startswith(("/docs", "/redoc")) for path in schema.json()["paths"])


async def test_urls_carry_the_root_path_behind_a_proxy(served: Served) -> None:
    # As uvicorn --root-path does: the prefix in root_path and at the start of the path.
    transport = httpx.ASGITransport(app=served.app, root_path="/imgcls")
    async with httpx.AsyncClient(transport=transport, base_url="http://imgcls") as client:
        await assert_served_locally(client, "/docs", prefix="/imgcls")
        page = (await client.get("/imgcls/docs")).text
    assert "url: '/imgcls/openapi.json'" in page


async def test_asset_file_names_stay_out_of_metric_labels(served: Served) -> None:
    await served.client.get("/docs/static/swagger-ui.css")
    await served.client.get("/docs/static/no-such-file.js")
    metrics = (await served.client.get("/metrics")).text
    assert "swagger-ui.css" not in metrics
    assert "no-such-file" not in metrics


@pytest.mark.parametrize("path", ["/docs", "/redoc", "/docs/oauth2-redirect"])
async def test_each_docs_page_has_a_policy_that_runs_its_own_inline_script_only(
    served: Served, path: str
) -> None:
    page = await served.client.get(path)
    policy = dict(
        directive.strip().split(" ", 1)
        for directive in page.headers["Content-Security-Policy"].split(";")
    )
    inline = re.findall(rb"<script>(.*?)</script>", page.content, re.DOTALL)
    hashes = [f"'sha256-{base64.b64encode(hashlib.sha256(s).digest()).decode()}'" for s in inline]
    assert policy["script-src"].split() == ["'self'", *hashes]
    assert policy["default-src"] == "'none'"
    assert policy["connect-src"] == "'self'"
    assert policy["frame-ancestors"] == "'none'"
    assert page.headers["X-Frame-Options"] == "DENY"
    if path == "/docs":
        assert len(hashes) == 1
        assert '"validatorUrl": null' in page.text  # its badge is an image from another site
