"""Authentication (optional bearer tokens), CORS (off unless configured) and the upload page's
security headers, through the real app."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from starlette.types import Message, Receive, Scope, Send

from service.http.auth import BearerAuth, needs_token
from service.observability.metrics import Metrics
from service.security import Tokens
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


async def test_the_page_html_is_reachable_only_with_the_page_headers() -> None:
    async with serve(Settings(), fake_factory()) as served:
        page = await served.client.get("/")
        as_asset = await served.client.get("/static/index.html")
        listing = await served.client.get("/static/")
        style = await served.client.get("/static/page.css")
    assert page.status_code == 200
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    assert (as_asset.status_code, listing.status_code) == (404, 404)
    assert style.status_code == 200
    assert style.headers["Content-Security-Policy"] == "default-src 'none'; frame-ancestors 'none'"
    assert style.headers["X-Frame-Options"] == "DENY"


async def recorded(app_calls: list[str], scope: dict[str, object]) -> list[dict[str, object]]:
    """What BearerAuth sends for ``scope``; ``app_calls`` records whether it let it through."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        app_calls.append(str(scope["type"]))

    async def receive() -> Message:
        return {"type": "websocket.connect"}

    sent: list[dict[str, object]] = []

    async def send(message: Message) -> None:
        sent.append(dict(message))

    auth = BearerAuth(app, Tokens(["t"], None), needs_token(Settings()), Metrics())
    await auth(scope, receive, send)
    return sent


async def test_a_websocket_needs_a_token_whatever_its_path() -> None:
    def websocket(path: str, *headers: tuple[bytes, bytes]) -> dict[str, object]:
        return {"type": "websocket", "path": path, "headers": list(headers)}

    calls: list[str] = []
    refused = await recorded(calls, websocket("/v1/stream"))
    public_path = await recorded(calls, websocket("/"))
    wrong = await recorded(calls, websocket("/v1/stream", (b"authorization", b"Bearer x")))
    assert calls == []
    assert refused == public_path == wrong == [{"type": "websocket.close", "code": 1008}]
    assert await recorded(calls, websocket("/ws", (b"authorization", b"Bearer t"))) == []
    assert calls == ["websocket"]
    assert await recorded(calls, {"type": "lifespan"}) == []
    assert await recorded(calls, {"type": "something-else"}) == []
    assert calls == ["websocket", "lifespan"]


def file_tokens(path: Path) -> Tokens:
    return Tokens([], path)


def accepts(tokens: Tokens, token: str) -> bool:
    return tokens.accepts(token.encode())


def test_tokens_file_comments_and_lines_that_are_not_tokens(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "tokens"
    path.write_text(
        "# rotation of 2024-05\n"
        "   # an indented comment\n"
        "new-token  # the one callers move to\n"
        "\told-token\n"
        "two words\n"
        "\n"
    )
    tokens = file_tokens(path)
    assert accepts(tokens, "new-token")
    assert accepts(tokens, "old-token")
    rejected = ["# an indented comment", "new-token  # the one callers move to", "two words"]
    assert not any(accepts(tokens, text) for text in rejected)
    assert "line 5 is not a bearer token" in caplog.text
    assert "two words" not in caplog.text  # a line is named by its number, never its text


def test_a_tokens_file_that_cannot_be_used_keeps_the_last_good_tokens(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "tokens"
    path.write_text("good\n")
    tokens = file_tokens(path)
    path.write_bytes(b"good\nnew-\xff-token\n")  # not UTF-8
    tokens.reload()
    assert accepts(tokens, "good")
    assert "is not UTF-8 (byte 9); keeping the 1 tokens read before" in caplog.text
    path.write_text("# all commented out mid-rotation\n")
    tokens.reload()
    assert accepts(tokens, "good")
    assert "holds no token; keeping the 1 tokens read before" in caplog.text
    path.unlink()
    tokens.reload()
    assert accepts(tokens, "good")
    assert "cannot be read" in caplog.text
    path.write_text("fixed\n")
    tokens.reload()
    assert accepts(tokens, "fixed")
    assert not accepts(tokens, "good")


async def test_an_undecodable_tokens_file_keeps_authenticated_calls_answered(
    tmp_path: Path,
) -> None:
    """The report's case: the file rewritten with a byte that is not UTF-8 made every
    authenticated call a 500."""
    path = tmp_path / "tokens"
    path.write_text("good\n")
    async with serve(Settings(api_tokens_file=path), fake_factory()) as served:
        before, _ = await classify(served, bearer("good"))
        path.write_bytes(b"\xff\n")
        _auth_of(served).tokens.reload()  # what the first request after the interval does
        after, _ = await classify(served, bearer("good"))
    assert (before, after) == (200, 200)


def test_a_tokens_file_change_is_seen_by_its_content_not_its_mtime(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text("first\n")
    tokens = file_tokens(path)
    stat = path.stat()
    path.write_text("second\n")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # as cp -p leaves it
    tokens.reload()
    assert accepts(tokens, "second")
    assert not accepts(tokens, "first")
