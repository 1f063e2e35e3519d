"""Authentication (optional bearer tokens), CORS (off unless configured) and the upload page's
security headers, through the real app."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from service.http.auth import BearerAuth
from service.settings import Settings
from tests.api.conftest import Served, fake_factory, serve

pytestmark = pytest.mark.anyio

PNG = {"Content-Type": "image/png"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def classify(served: Served, headers: dict[str, str] | None = None) -> tuple[int, object]:
    response = await served.client.post(
        "/v1/classify", content=b"img", headers=PNG | (headers or {})
    )
    return response.status_code, response.json()


async def test_without_tokens_nothing_asks_for_one() -> None:
    async with serve(Settings(), fake_factory()) as served:
        assert (await classify(served))[0] == 200
        assert (await served.client.get("/metrics")).status_code == 200


async def test_the_api_needs_one_of_the_tokens_and_says_so_in_the_error_shape() -> None:
    settings = Settings(api_tokens="old-token, new-token")
    async with serve(settings, fake_factory()) as served:
        missing = await served.client.post("/v1/classify", content=b"img", headers=PNG)
        wrong = await classify(served, bearer("new-tokem"))
        basic = await classify(served, {"Authorization": "Basic b2xkLXRva2Vu"})
        old, new = (
            await classify(served, bearer("old-token")),
            await classify(served, bearer("new-token")),
        )
        v2 = await served.client.get("/v2/models/fake")
        metrics = (await served.client.get("/metrics")).text
    assert missing.status_code == 401
    assert missing.headers["WWW-Authenticate"] == 'Bearer realm="imgcls"'
    assert missing.json() == {
        "error": {
            "code": "unauthorized",
            "message": "a valid bearer token is required (Authorization: Bearer <token>)",
        }
    }
    assert wrong == (
        401,
        {"error": {"code": "unauthorized", "message": "the bearer token is not valid"}},
    )
    assert basic[0] == 401
    assert (old[0], new[0]) == (200, 200)  # both, during a rotation
    assert (v2.status_code, v2.json()) == (
        401,
        {"error": "a valid bearer token is required (Authorization: Bearer <token>)"},
    )
    assert 'imgcls_rejections_total{reason="unauthorized"} 4.0' in metrics


async def test_probes_metrics_page_and_docs_stay_open_unless_configured() -> None:
    async with serve(Settings(api_tokens="t"), fake_factory()) as served:
        open_paths = ["/livez", "/readyz", "/v2/health/ready", "/metrics", "/", "/static/page.js"]
        statuses = {p: (await served.client.get(p)).status_code for p in [*open_paths, "/docs"]}
    assert statuses == dict.fromkeys([*open_paths, "/docs"], 200)
    settings = Settings(api_tokens="t", auth_probes=True, auth_metrics=True)
    async with serve(settings, fake_factory()) as served:
        closed = {
            p: (await served.client.get(p)).status_code for p in ("/livez", "/readyz", "/metrics")
        }
        with_token = (await served.client.get("/metrics", headers=bearer("t"))).status_code
    assert closed == {"/livez": 401, "/readyz": 401, "/metrics": 401}
    assert with_token == 200


async def test_tokens_file_is_read_again_when_it_changes(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("# current tokens\nfirst\n")
    async with serve(Settings(api_tokens_file=tokens), fake_factory()) as served:
        before = await classify(served, bearer("first"))
        tokens.write_text("second\n")
        stat = tokens.stat()
        os.utime(tokens, (stat.st_atime, stat.st_mtime + 10))  # a later mtime, whatever the clock
        _auth_of(served).tokens.reload()  # what the first request after the interval does
        after_old = await classify(served, bearer("first"))
        after_new = await classify(served, bearer("second"))
    assert (before[0], after_old[0], after_new[0]) == (200, 401, 200)


def _auth_of(served: Served) -> BearerAuth:
    layer = served.app.middleware_stack
    while layer is not None and type(layer).__name__ != "BearerAuth":
        layer = getattr(layer, "app", None)
    assert isinstance(layer, BearerAuth), "no BearerAuth in the middleware stack"
    return layer


async def test_cors_is_off_unless_origins_are_configured() -> None:
    preflight = {
        "Origin": "https://app.example",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
    }
    async with serve(Settings(), fake_factory()) as served:
        off = await served.client.options("/v1/classify", headers=preflight)
        plain = await served.client.get("/livez", headers={"Origin": "https://app.example"})
    assert "access-control-allow-origin" not in off.headers
    assert "access-control-allow-origin" not in plain.headers
    settings = Settings(cors_origins="https://app.example", api_tokens="t")
    async with serve(settings, fake_factory()) as served:
        on = await served.client.options("/v1/classify", headers=preflight)
        other = await served.client.options(
            "/v1/classify", headers=preflight | {"Origin": "https://evil.example"}
        )
        answered = await served.client.post(
            "/v1/classify",
            content=b"img",
            headers=PNG | bearer("t") | {"Origin": "https://app.example"},
        )
    assert on.status_code == 200  # the preflight needs no token
    assert on.headers["access-control-allow-origin"] == "https://app.example"
    assert "authorization" in on.headers["access-control-allow-headers"].lower()
    assert other.status_code == 400
    assert answered.headers["access-control-allow-origin"] == "https://app.example"
    assert "X-Request-ID" in answered.headers["access-control-expose-headers"]


async def test_the_page_forbids_inline_code_framing_and_sniffing() -> None:
    async with serve(Settings(), fake_factory()) as served:
        page = await served.client.get("/")
        script = await served.client.get("/static/page.js")
        api = await served.client.get("/livez")
    csp = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp
    assert page.headers["X-Frame-Options"] == "DENY"
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert api.headers["X-Content-Type-Options"] == "nosniff"
    # No inline script or style left for the policy to block.
    assert not re.search(r"<script(?![^>]*\bsrc=)", page.text)
    assert "<style" not in page.text
    assert " style=" not in page.text
    assert script.status_code == 200
    assert "javascript" in script.headers["content-type"]
