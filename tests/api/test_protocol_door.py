"""The door in uvicorn's HTTP protocol (service/server/protocol.py), in a real uvicorn server
on a loopback port, with the fake classifier holding one request so that the queue (capacity 1)
is full. The app is wrapped in a recorder: a refusal answered by the protocol never reaches it.
What is compared with the app's own answer is what a caller sees."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from service.app import create_app
from service.http.state import service_state
from service.observability.logs import ACCESS_LOGGER
from service.observability.metrics import Metrics
from service.server.draining import _protocol
from service.settings import Settings
from tests.api.conftest import fake_factory, on_loopback, serve

pytestmark = pytest.mark.anyio

OVERLOADED = {"error": {"code": "overloaded", "message": "1 images in flight, the limit is 1"}}
IMAGE = {"Content-Type": "image/png"}


@dataclass
class Live:
    app: FastAPI
    url: str
    port: int
    metrics: Metrics
    reached_app: list[str] = field(default_factory=list)  # paths of the HTTP requests the app saw
    held: asyncio.Task[httpx.Response] | None = None  # the request that fills the queue

    @property
    def classifier(self) -> Any:
        return service_state(self.app).classifier


@contextlib.asynccontextmanager
async def live(settings: Settings) -> AsyncIterator[Live]:
    """The app behind uvicorn with the door protocol; one request held in flight."""
    metrics = Metrics()
    app = create_app(settings, metrics=metrics, classifier_factory=fake_factory(hold=True))
    reached: list[str] = []

    async def recorder(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            reached.append(scope["path"])
        await app(scope, receive, send)

    async with on_loopback(app, recorder) as (port, _):
        served = Live(app, f"http://127.0.0.1:{port}", port, metrics, reached)
        try:
            async with httpx.AsyncClient(base_url=served.url) as client:
                token = settings.api_tokens
                auth = {"Authorization": f"Bearer {token.get_secret_value()}"} if token else {}
                held = client.post("/v1/classify", content=b"img", headers=IMAGE | auth)
                served.held = asyncio.create_task(held)
                await admitted(served, 1)
                served.reached_app.clear()
                yield served
                served.classifier.release.set()
                assert (await served.held).status_code == 200
        finally:
            # Whatever a failing test left held ends, so that the server can stop.
            served.classifier.release.set()


async def admitted(served: Live, count: int) -> None:
    """Bounded: a test whose request is never admitted fails here instead of hanging."""
    async with asyncio.timeout(10):
        await served.classifier.wait_admitted(count)


async def exchange(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One response off a raw connection: status, headers (lower-case names), body."""
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    fields = (line.partition(":") for line in head[1:] if line)
    headers = {name.strip().lower(): value.strip() for name, _, value in fields}
    body = await reader.readexactly(int(headers["content-length"]))
    return int(head[0].split(" ")[1]), headers, body


def request(path: str, body: bytes, extra: str = "") -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: imgcls\r\nContent-Type: image/png\r\n{extra}"
    return f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


@pytest.mark.parametrize(
    ("route", "body"),
    [
        ("/v1/classify", OVERLOADED),
        ("/v1/classify/batch", OVERLOADED),
        ("/v2/models/fake/infer", {"error": "1 images in flight, the limit is 1"}),
    ],
)
async def test_an_overload_refusal_is_answered_by_the_protocol_not_the_app(
    route: str, body: dict[str, Any]
) -> None:
    async with live(Settings(queue_capacity=1)) as served, httpx.AsyncClient() as client:
        refused = await client.post(
            served.url + route, content=b"x" * 200_000, headers=IMAGE | {"X-Request-ID": "r-1"}
        )
        assert served.reached_app == []
    assert refused.status_code == 503
    assert refused.json() == body
    assert refused.headers["Retry-After"] == "1"
    assert refused.headers["Content-Type"] == "application/json"
    assert refused.headers["X-Request-ID"] == "r-1"
    assert refused.headers["X-Content-Type-Options"] == "nosniff"
    assert re.fullmatch(r"total;dur=\d+\.\d\d", refused.headers["Server-Timing"])


async def test_the_refusal_is_the_one_the_app_would_give() -> None:
    """Same status, body and header names as the ASGI door's answer (values that differ by
    nature: the date, the timing, a generated request id)."""
    settings = Settings(queue_capacity=1)
    async with live(settings) as served, httpx.AsyncClient() as client:
        early = await client.post(served.url + "/v1/classify", content=b"img", headers=IMAGE)
    async with serve(settings, fake_factory(hold=True)) as asgi:
        held = asyncio.create_task(asgi.client.post("/v1/classify", content=b"i", headers=IMAGE))
        await asgi.classifier.wait_admitted(1)
        late = await asgi.client.post("/v1/classify", content=b"img", headers=IMAGE)
        asgi.classifier.release.set()
        await held
    assert (early.status_code, early.content) == (late.status_code, late.content)
    assert set(early.headers) - {"date"} == set(late.headers)
    for name in ("content-type", "content-length", "retry-after", "x-content-type-options"):
        assert early.headers[name] == late.headers[name]


async def test_the_connection_serves_on_after_a_refusal() -> None:
    """The upload after a refused head is read and dropped, whether it was sent with the head,
    after the 503 arrived, or with the next request pipelined behind it; the connection then
    carries the next request."""
    async with live(Settings(queue_capacity=1)) as served:
        reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
        upload = b"y" * 300_000
        writer.write(request("/v1/classify", upload))
        assert (await exchange(reader))[0] == 503
        # The head alone; the body once the refusal is in.
        writer.write(request("/v1/classify", upload)[: -len(upload)])
        assert (await exchange(reader))[0] == 503
        writer.write(upload)
        # Two pipelined requests: two answers, in order.
        writer.write(request("/v1/classify/batch", upload) + request("/v1/classify", b"z"))
        first, second = await exchange(reader), await exchange(reader)
        assert (first[0], second[0]) == (503, 503)
        assert (
            first[2]
            == second[2]
            == b'{"error":{"code":"overloaded","message":"1 images in flight, the limit is 1"}}'
        )
        # Room again: the same connection's next request is admitted and answered.
        served.classifier.release.set()
        assert served.held is not None
        await served.held
        writer.write(request("/v1/classify", b"img"))
        status, _, body = await exchange(reader)
        assert status == 200
        assert json.loads(body)["predictions"][0]["label"] == "class 0"
        assert served.reached_app == ["/v1/classify"]
        writer.close()


async def test_a_refusal_is_counted_and_logged_like_any_other(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with live(Settings(queue_capacity=1)) as served, httpx.AsyncClient() as client:
        metrics = served.metrics
        labels = {"route": "/v1/classify", "method": "POST", "status": "503"}
        before = sample(metrics, "imgcls_http_requests_total", **labels)
        rejected = sample(metrics, "imgcls_rejections_total", reason="overloaded")
        with caplog.at_level(logging.INFO, logger=ACCESS_LOGGER):
            await client.post(
                served.url + "/v1/classify", content=b"img", headers=IMAGE | {"X-Request-ID": "r2"}
            )
        assert sample(metrics, "imgcls_http_requests_total", **labels) == before + 1
        assert sample(metrics, "imgcls_rejections_total", reason="overloaded") == rejected + 1
        assert served.reached_app == []
    [line] = [r for r in caplog.records if r.name == ACCESS_LOGGER and r.__dict__["status"] == 503]
    assert line.getMessage() == "POST /v1/classify 503"
    assert (line.__dict__["request_id"], line.__dict__["route"]) == ("r2", "/v1/classify")


@pytest.mark.parametrize(
    ("settings", "headers", "status", "check"),
    [
        # No token: the app's 401 comes before any word about the load.
        (Settings(queue_capacity=1, api_tokens="s3cret"), {}, 401, lambda h: True),
        # A browser's request: the CORS middleware adds its headers to the 503.
        (
            Settings(queue_capacity=1, cors_origins="https://ui.example"),
            {"Origin": "https://ui.example"},
            503,
            lambda h: h["Access-Control-Allow-Origin"] == "https://ui.example",
        ),
    ],
    ids=["no-token", "cors"],
)
async def test_requests_the_app_answers_differently_go_to_the_app(
    settings: Settings, headers: dict[str, str], status: int, check: Callable[[Any], bool]
) -> None:
    async with live(settings) as served, httpx.AsyncClient() as client:
        response = await client.post(
            served.url + "/v1/classify", content=b"img", headers=IMAGE | headers
        )
        assert served.reached_app == ["/v1/classify"]
    assert response.status_code == status
    assert check(response.headers)


async def test_with_a_valid_token_the_protocol_refuses() -> None:
    async with live(Settings(queue_capacity=1, api_tokens="s3cret")) as served:
        async with httpx.AsyncClient() as client:
            response = await client.post(
                served.url + "/v1/classify",
                content=b"img",
                headers=IMAGE | {"Authorization": "Bearer s3cret"},
            )
        assert served.reached_app == []
    assert (response.status_code, response.json()) == (503, OVERLOADED)


def test_the_service_serves_through_the_door_protocol() -> None:
    """python -m service's uvicorn config (service/server/draining.py) uses it on httptools."""
    app = create_app(Settings(), metrics=Metrics())
    protocol = _protocol("httptools", app)
    assert not isinstance(protocol, str)
    assert protocol.__name__ == "ServiceProtocol"
    assert _protocol("h11", app) == "h11"


async def test_a_client_that_asks_to_close_gets_its_refusal_and_then_the_close() -> None:
    async with live(Settings(queue_capacity=1)) as served:
        reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
        writer.write(request("/v1/classify", b"img", "Connection: close\r\n"))
        status, headers, _ = await exchange(reader)
        assert (status, headers["connection"]) == (503, "close")
        assert await reader.read() == b""  # the server closed it
        writer.close()
        assert served.reached_app == []


async def test_a_client_that_waits_for_100_continue_is_refused_without_uploading() -> None:
    """The 503 comes instead of "100 Continue", and the connection closes: the client never
    sends the body, so the connection could not carry a next request."""
    async with live(Settings(queue_capacity=1)) as served:
        reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
        head = request("/v1/classify", b"x" * 5_000_000, "Expect: 100-continue\r\n")
        writer.write(head[: head.index(b"\r\n\r\n") + 4])  # the head only
        status, headers, body = await exchange(reader)
        assert (status, headers["connection"]) == (503, "close")
        assert json.loads(body) == OVERLOADED
        assert await reader.read() == b""
        writer.close()
        assert served.reached_app == []


async def test_a_request_still_uploading_holds_no_place() -> None:
    """A place is held by work, not by a promise of work: with one place left, a request whose
    upload is still on its way does not have it; a complete request arriving meanwhile takes
    it, and the slow one, complete with no room left, is refused by its route's admission."""
    async with live(Settings(queue_capacity=2)) as served, httpx.AsyncClient() as client:
        reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
        slow = request("/v1/classify", b"x" * 1000)
        writer.write(slow[:-990])  # the head and 10 bytes of the body
        async with asyncio.timeout(10):  # its task has started
            while served.reached_app != ["/v1/classify"]:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        assert served.classifier.lifecycle.reserved == 0
        quick = asyncio.create_task(
            client.post(served.url + "/v1/classify", content=b"img", headers=IMAGE)
        )
        await admitted(served, 2)  # the last place went to the complete request
        writer.write(slow[-990:])  # the rest: complete, but no room is left
        status, _, body = await exchange(reader)
        assert (status, json.loads(body)) == (
            503,
            {"error": {"code": "overloaded", "message": "2 images in flight, the limit is 2"}},
        )
        served.classifier.release.set()
        assert (await quick).status_code == 200
        writer.close()


async def test_a_request_let_in_but_refused_before_admission_gives_its_slot_back() -> None:
    async with live(Settings(queue_capacity=2)) as served, httpx.AsyncClient() as client:
        wrong = await client.post(
            served.url + "/v1/classify", content=b"img", headers={"Content-Type": "text/plain"}
        )
        assert wrong.status_code == 415
        next_one = asyncio.create_task(
            client.post(served.url + "/v1/classify", content=b"img", headers=IMAGE)
        )
        await admitted(served, 2)  # the 415's slot was free again
        served.classifier.release.set()
        assert (await next_one).status_code == 200


async def test_no_way_of_ending_before_admission_keeps_a_slot() -> None:
    """Each of these is let in with a reserved slot and ends before admission; with one slot
    left, any slot kept would turn the last, valid request into a 503."""
    settings = Settings(queue_capacity=2, max_upload_bytes=1000)
    async with live(settings) as served, httpx.AsyncClient(base_url=served.url) as client:
        for _ in range(3):
            endings = [
                await client.post("/v1/classify", content=b"i", headers={"Content-Type": "a/b"}),
                await client.post("/v1/classify", content=b"x" * 2000, headers=IMAGE),
                await client.post("/v1/classify?top_k=0", content=b"img", headers=IMAGE),
                await client.post("/v1/classify/batch", content=b"{}", headers=IMAGE),
            ]
            assert [r.status_code for r in endings] == [415, 413, 422, 415]
            # A caller that hangs up halfway through its upload.
            seen = len(served.reached_app)
            _, writer = await asyncio.open_connection("127.0.0.1", served.port)
            writer.write(request("/v1/classify", b"x" * 900)[:-800])
            await writer.drain()
            async with asyncio.timeout(10):  # let in: its task runs
                while len(served.reached_app) == seen:  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
            writer.close()
            async with asyncio.timeout(10):  # its slot is held until its task notices
                while served.classifier.lifecycle.reserved:  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
        last = asyncio.create_task(client.post("/v1/classify", content=b"img", headers=IMAGE))
        await admitted(served, 2)
        served.classifier.release.set()
        assert (await last).status_code == 200
