"""The body budget (IMGCLS_BODY_BUDGET_BYTES, service/limits/body_budget.py): request bodies held
in memory
at once are bounded. While a slow upload holds part of the budget, a body that would not fit
beside it is refused with 503 overloaded and Retry-After before any of it is read (or, sent
chunked, at the first chunk that would not fit); once the holder is answered, its bytes are
given back and the same body is admitted."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from pydantic import ValidationError

from service.errors import BadImage
from service.http.state import service_state
from service.http.uploads import body_parsed
from service.settings import Settings
from tests.api.asgi import ScriptedClient, call, http_scope
from tests.api.conftest import Served, fake_factory, serve

pytestmark = pytest.mark.anyio

BUDGET = 100_000
# The smallest budget the settings accept is the largest body a route takes: max_request_bytes,
# or one max_upload_bytes image base64-encoded in its envelope (4000 + 64 KiB here).
SETTINGS = Settings(max_upload_bytes=3000, max_request_bytes=70_000, body_budget_bytes=BUDGET)
REFUSED = {
    "error": {
        "code": "overloaded",
        "message": "request bodies held in memory are at their budget (60000 of 100000 bytes); "
        "this one needs 50000",
    }
}


def json_body(size: int, key: str = "image", image: str = '"aW1n"') -> bytes:
    """A valid JSON request of exactly ``size`` bytes (padded with JSON whitespace)."""
    body = f'{{"{key}": {image}}}'.encode()
    return body + b" " * (size - len(body))


def body_bytes(served: Served) -> float | None:
    return served.metrics.registry.get_sample_value("imgcls_request_body_bytes")


def declared(size: int, path: str = "/v1/classify") -> dict[str, object]:
    return http_scope(path, {"Content-Type": "application/json", "Content-Length": str(size)})


async def holding(served: Served, size: int) -> tuple[ScriptedClient, asyncio.Task[None]]:
    """A slow upload of ``size`` declared bytes, stalled after its first half."""
    body = json_body(size)
    holder = ScriptedClient([body[: size // 2], body[size // 2 :]], stall_after=1)
    task = asyncio.create_task(call(served.app, declared(size), holder))
    await holder.stalled.wait()
    return holder, task


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/classify", json_body(50_000)),
        ("/v1/classify/batch", json_body(50_000, "images", '["aW1n"]')),
        ("/v2/models/fake/infer", json_body(50_000, "inputs", "[]")),
    ],
)
async def test_a_body_that_does_not_fit_is_refused_before_it_is_read(
    path: str, body: bytes
) -> None:
    async with serve(SETTINGS, fake_factory()) as served:
        holder, task = await holding(served, 60_000)
        assert body_bytes(served) == 60_000  # the declared length, taken before reading it

        refused = ScriptedClient([body])
        await call(served.app, declared(len(body), path), refused)
        assert refused.status == 503
        assert refused.chunks_read == 0
        headers = dict(refused.sent[0]["headers"])
        assert headers[b"retry-after"] == b"1"
        if path.startswith("/v2"):  # the Open Inference Protocol's error shape
            assert json.loads(refused.body) == {"error": REFUSED["error"]["message"]}
        else:
            assert json.loads(refused.body) == REFUSED

        holder.resume.set()
        await task
        assert holder.status == 200, holder.body
        assert body_bytes(served) == 0  # given back once answered


async def test_the_same_body_is_admitted_once_the_holder_is_answered() -> None:
    async with serve(SETTINGS, fake_factory()) as served:
        holder, task = await holding(served, 60_000)
        holder.resume.set()
        await task
        later = ScriptedClient([json_body(50_000)])
        await call(served.app, declared(50_000), later)
        assert later.status == 200, later.body
        assert body_bytes(served) == 0


async def test_a_chunked_body_is_refused_at_the_first_chunk_that_does_not_fit() -> None:
    async with serve(SETTINGS, fake_factory()) as served:
        holder, task = await holding(served, 60_000)
        body = json_body(60_000)
        chunked = ScriptedClient([body[i : i + 10_000] for i in range(0, 60_000, 10_000)])
        scope = http_scope("/v1/classify", {"Content-Type": "application/json"})
        await call(served.app, scope, chunked)
        assert chunked.status == 503
        assert chunked.chunks_read == 5  # 4 chunks fit beside the 60,000 held; the 5th does not
        assert json.loads(chunked.body)["error"]["code"] == "overloaded"
        assert body_bytes(served) == 60_000  # the refused request's 40,000 are given back
        holder.resume.set()
        await task
        assert body_bytes(served) == 0


@pytest.mark.parametrize(
    ("body", "error", "status"),
    [
        (b'{"image": ', None, 422),  # invalid JSON
        (json_body(80_000), None, 413),  # over the single-image body limit (69,536)
        (json_body(200), BadImage("cannot identify image file"), 400),  # from the classifier
    ],
)
async def test_bytes_are_given_back_whatever_the_answer(
    body: bytes, error: BadImage | None, status: int
) -> None:
    async with serve(SETTINGS, fake_factory(error=error)) as served:
        client = ScriptedClient([body])
        await call(served.app, declared(len(body)), client)
        assert client.status == status, client.body
        assert body_bytes(served) == 0


async def test_a_client_gone_mid_upload_gives_its_bytes_back() -> None:
    async with serve(SETTINGS, fake_factory()) as served:
        holder = ScriptedClient([json_body(60_000)[:30_000], b""], stall_after=1)
        request = asyncio.create_task(call(served.app, declared(60_000), holder))
        await holder.stalled.wait()
        assert body_bytes(served) == 60_000
        holder.chunks = holder.chunks[:1]  # no more body: the client is gone
        holder.disconnect.set()
        holder.resume.set()
        await request
        assert holder.status == 499
        assert body_bytes(served) == 0


def test_the_budget_must_hold_the_largest_body() -> None:
    with pytest.raises(ValidationError, match=r"body_budget_bytes .* must hold the largest body"):
        Settings(max_request_bytes=70_000, body_budget_bytes=69_999)
    with pytest.raises(ValidationError, match=r"largest body a route accepts \(28027564 bytes"):
        Settings(max_request_bytes=1000, body_budget_bytes=28_000_000)  # 20 MB, base64


@pytest.mark.parametrize(
    ("length", "status", "code"),
    [
        (b"\xb2", 400, "bad_request"),  # "²" in Latin-1, as headers are decoded: isdigit() is True
        ("١٢".encode(), 400, "bad_request"),  # Arabic-Indic digits, as UTF-8 bytes
        (b"-1", 400, "bad_request"),
        (b"99999999999999999999", 413, "image_too_large"),  # ASCII digits: over the limit
    ],
)
@pytest.mark.parametrize("path", ["/v1/classify", "/v1/classify/batch", "/v2/models/fake/infer"])
async def test_a_content_length_is_read_as_ascii_digits_only(
    path: str, length: bytes, status: int, code: str
) -> None:
    async with serve(SETTINGS, fake_factory()) as served:
        scope = declared(200, path)
        scope["headers"] = [(b"content-type", b"application/json"), (b"content-length", length)]
        client = ScriptedClient([json_body(200)])
        await call(served.app, scope, client)
        assert client.status == status, client.body
        error = json.loads(client.body)["error"]
        if not path.startswith("/v2"):  # the Open Inference Protocol's shape is a bare message
            assert error["code"] == code
        assert client.chunks_read == 0  # refused before any of the body is read
        assert body_bytes(served) == 0


# -- eviction when the budget is contended (IMGCLS_BODY_CONTENDED_FINISH_S) -------------------


def hours_later(served: Served) -> None:
    """The budget's clock, moved on: the stalled holder's 30,000 bytes took 3 hours (its body
    clock, on the event loop's own clock, is not moved)."""
    budget = service_state(served.app).body_budget
    budget.clock = lambda: time.monotonic() + 3 * 3600


async def test_a_body_too_slow_to_finish_is_evicted_for_one_that_does_not_fit() -> None:
    async with serve(SETTINGS, fake_factory()) as served:
        holder, task = await holding(served, 60_000)
        hours_later(served)
        newcomer = ScriptedClient([json_body(50_000)])
        await call(served.app, declared(50_000), newcomer)
        assert newcomer.status == 200, newcomer.body
        await task
        assert holder.status == 408
        assert dict(holder.sent[0]["headers"])[b"connection"] == b"close"
        error = json.loads(holder.body)["error"]
        assert error["code"] == "request_timeout"
        assert error["message"].startswith(
            "the request body arrived too slowly for a server whose body budget is full: "
            "30000 of 60000 bytes in "
        )
        assert holder.chunks_read == 1  # not read any further
        assert body_bytes(served) == 0
        registry = served.metrics.registry
        assert registry.get_sample_value("imgcls_request_body_evictions_total") == 1


@pytest.mark.parametrize("parsed", ["before its reader began", "while its reader waits"])
async def test_a_body_whose_last_byte_is_parsed_is_not_evicted_before_it_is_read(
    parsed: str,
) -> None:
    async with serve(SETTINGS, fake_factory()) as served:
        scope, body = declared(60_000), json_body(60_000)
        holder = ScriptedClient([body[:30_000], body[30_000:]], stall_after=1)
        if parsed == "before its reader began":
            body_parsed(scope)  # as the HTTP protocol does: the reader lags behind the parser
        task = asyncio.create_task(call(served.app, scope, holder))
        await holder.stalled.wait()
        if parsed == "while its reader waits":
            body_parsed(scope)
        hours_later(served)
        newcomer = ScriptedClient([json_body(50_000)])
        await call(served.app, declared(50_000), newcomer)
        assert newcomer.status == 503
        assert served.metrics.registry.get_sample_value("imgcls_request_body_evictions_total") == 0
        holder.resume.set()
        await task
        assert holder.status == 200, holder.body
