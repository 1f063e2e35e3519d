"""Every connection has a clock and every head a bound (service/server/protocol.py, and the body
reader's clock in service/http/uploads.py), in a real uvicorn server on a loopback port with the
service's protocol and a fake classifier, with short clocks so that nothing here waits long."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from service.app import create_app
from service.http.door import EarlyDoor
from service.observability.metrics import Metrics
from service.settings import Settings
from tests.api.conftest import fake_factory, on_loopback

pytestmark = pytest.mark.anyio

CLOCK_S = 0.5
FAST = {"http_head_timeout_s": CLOCK_S, "body_idle_timeout_s": CLOCK_S}


@dataclass
class Live:
    app: FastAPI
    url: str
    port: int
    metrics: Metrics
    server: uvicorn.Server

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", self.port)

    def sample(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0.0


@contextlib.asynccontextmanager
async def live(**overrides: object) -> AsyncIterator[Live]:
    """The app behind uvicorn with the service's protocol, configured as build_server does."""
    settings = Settings(**(FAST | overrides))  # type: ignore[arg-type]
    metrics = Metrics()
    app = create_app(settings, metrics=metrics, classifier_factory=fake_factory())
    async with on_loopback(app) as (port, server):
        yield Live(app, f"http://127.0.0.1:{port}", port, metrics, server)


async def answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    fields = (line.partition(":") for line in head[1:] if line)
    headers = {name.strip().lower(): value.strip() for name, _, value in fields}
    body = await reader.readexactly(int(headers["content-length"]))
    return int(head[0].split(" ")[1]), headers, body


async def closed(reader: asyncio.StreamReader) -> bool:
    async with asyncio.timeout(5):
        return await reader.read() == b""


async def ask(served: Live, raw: bytes) -> tuple[int, dict[str, str], dict[str, object]]:
    """One raw request on a connection of its own; the answer must close the connection."""
    reader, writer = await served.connect()
    writer.write(raw)
    status, headers, body = await answer(reader)
    assert await closed(reader)
    writer.close()
    return status, headers, json.loads(body)


def error(code: str, message: str) -> dict[str, object]:
    return {"error": {"code": code, "message": message}}


# -- the head clock ------------------------------------------------------------------------


async def test_a_silent_connection_is_closed_by_the_head_clock_without_an_answer() -> None:
    async with live() as served:
        reader, writer = await served.connect()
        assert await closed(reader)  # nothing written: no request to answer
        writer.close()
        assert served.sample("imgcls_http_connections_closed_total", reason="head_timeout") == 1


async def test_a_partial_head_gets_408_then_the_connection_closes() -> None:
    async with live() as served:
        status, headers, body = await ask(served, b"GET /livez HTTP/1.1\r\nHost: x\r\n")
    assert (status, headers["connection"]) == (408, "close")
    assert body == error("request_timeout", "the request head did not arrive within 0.5 s")


async def test_a_kept_alive_connection_gets_a_head_clock_for_each_request() -> None:
    """After a first answer, a next request that starts and stalls is timed out too (uvicorn's
    keep-alive timer stops at its first byte)."""
    async with live(http_keep_alive_s=30) as served:
        reader, writer = await served.connect()
        writer.write(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await answer(reader))[0] == 200
        writer.write(b"GET /livez HTTP/1.1\r\n")
        assert (await answer(reader))[0] == 408
        assert await closed(reader)
        writer.close()


async def test_a_slow_request_is_not_mistaken_for_a_slow_head() -> None:
    """The head clock stops when the head is complete: a request the server works on for
    longer than the head timeout is answered."""
    async with live() as served:
        served.app.state.imgcls.classifier.release.clear()
        async with httpx.AsyncClient(base_url=served.url) as client:
            work = asyncio.create_task(
                client.post("/v1/classify", content=b"img", headers={"Content-Type": "image/png"})
            )
            await asyncio.sleep(3 * CLOCK_S)
            served.app.state.imgcls.classifier.release.set()
            assert (await work).status_code == 200


# -- bounded heads -------------------------------------------------------------------------


async def test_a_head_over_its_byte_limit_gets_431() -> None:
    async with live(http_max_head_bytes=4096) as served:
        status, _, body = await ask(
            served, b"GET /livez HTTP/1.1\r\nX-Big: " + b"v" * 100_000 + b"\r\n\r\n"
        )
        assert (status, body) == (
            431,
            error("headers_too_large", "the request head exceeds 4096 bytes"),
        )
        # A head just under the limit is served.
        reader, writer = await served.connect()
        head = b"GET /livez HTTP/1.1\r\nX-Pad: "
        writer.write(head + b"v" * (4096 - len(head) - 4) + b"\r\n\r\n")
        assert (await answer(reader))[0] == 200
        writer.close()


async def test_too_many_header_fields_get_431() -> None:
    async with live(http_max_headers=20) as served:
        fields = b"".join(b"X-%d: y\r\n" % i for i in range(21))
        status, _, body = await ask(served, b"GET /livez HTTP/1.1\r\n" + fields + b"\r\n")
    assert (status, body) == (
        431,
        error("headers_too_large", "the request has more than 20 header fields"),
    )


async def test_a_long_target_gets_414_in_its_routes_shape() -> None:
    async with live(http_max_url_bytes=1024) as served:
        v1 = await ask(served, b"GET /v1/model?" + b"a" * 2000 + b" HTTP/1.1\r\n\r\n")
        v2 = await ask(served, b"GET /v2/models/x?" + b"a" * 2000 + b" HTTP/1.1\r\n\r\n")
    assert (v1[0], v1[2]) == (414, error("uri_too_long", "the request target exceeds 1024 bytes"))
    assert (v2[0], v2[2]) == (414, {"error": "the request target exceeds 1024 bytes"})


# -- JSON for what the parser refuses ------------------------------------------------------


async def test_an_unknown_method_is_answered_as_the_app_answers_a_method_its_route_refuses() -> (
    None
):
    async with live() as served:
        unknown = await ask(served, b"FOO /v1/classify HTTP/1.1\r\nHost: x\r\n\r\n")
        async with httpx.AsyncClient(base_url=served.url) as client:
            known = await client.delete("/v1/classify")
        nowhere = await ask(served, b"FOO /nowhere HTTP/1.1\r\n\r\n")
        labels = {"route": "/v1/classify", "method": "_OTHER", "status": "405"}
        assert served.sample("imgcls_http_requests_total", **labels) == 1
    assert (unknown[0], unknown[1]["allow"], unknown[2]) == (405, "POST", known.json())
    assert known.headers["allow"] == "POST"
    assert (nowhere[0], nowhere[2]) == (404, error("not_found", "Not Found"))


async def test_a_request_the_parser_refuses_gets_a_json_400() -> None:
    async with live() as served:
        status, _, body = await ask(served, b"GET /livez HTTP/1.1\r\nBad Header\r\n\r\n")
    assert status == 400
    assert body["error"]["code"] == "bad_request"  # type: ignore[index]


# -- the connection cap --------------------------------------------------------------------


async def test_over_the_connection_cap_probes_answer_and_the_rest_get_a_json_503() -> None:
    async with live(http_limit_concurrency=4, http_head_timeout_s=30) as served:
        idle = [await served.connect() for _ in range(4)]
        async with httpx.AsyncClient(base_url=served.url) as client:
            probes = [(await client.get(p)).status_code for p in ("/livez", "/readyz")]
            refused = await client.get("/v1/model")
        for _, writer in idle:
            writer.close()
    assert probes == [200, 200]
    assert (refused.status_code, refused.headers["connection"]) == (503, "close")
    assert refused.json()["error"]["code"] == "overloaded"


# -- body clocks ---------------------------------------------------------------------------


async def test_a_stalled_upload_gets_408_and_gives_its_bytes_back_at_once() -> None:
    async with live() as served:
        reader, writer = await served.connect()
        writer.write(
            b"POST /v1/classify HTTP/1.1\r\nContent-Type: image/png\r\nContent-Length: 1000\r\n\r\n"
            + b"x" * 400
        )
        status, headers, body = await answer(reader)
        assert (status, headers["connection"]) == (408, "close")
        assert json.loads(body)["error"]["code"] == "request_timeout"
        assert await closed(reader)
        assert served.sample("imgcls_request_body_bytes") == 0
        writer.close()


async def test_a_body_below_the_minimum_rate_gets_408_and_one_above_it_is_served() -> None:
    async with live(body_idle_timeout_s=0.3, body_min_rate_bytes_per_s=2000) as served:
        slow = await _upload(served, chunk=50, every_s=0.1)  # 500 bytes/s
        steady = await _upload(served, chunk=500, every_s=0.1)  # 5,000 bytes/s
    assert slow == 408
    assert steady == 200


async def _upload(served: Live, chunk: int, every_s: float) -> int:
    reader, writer = await served.connect()
    writer.write(
        b"POST /v1/classify HTTP/1.1\r\nContent-Type: image/png\r\nContent-Length: 3000\r\n\r\n"
    )
    reply = asyncio.create_task(answer(reader))
    for _ in range(3000 // chunk):
        await asyncio.wait([reply], timeout=every_s)
        if reply.done():
            break
        writer.write(b"x" * chunk)
    status = (await reply)[0]
    writer.close()
    return status


async def test_a_body_left_unread_is_timed_out_by_the_protocol() -> None:
    """Answered before its upload (401), the rest of the body is dropped as it arrives, on the
    same clock: a client that then stalls does not keep the connection forever."""
    async with live(api_tokens="s3cret") as served:
        reader, writer = await served.connect()
        writer.write(
            b"POST /v1/classify HTTP/1.1\r\nContent-Type: image/png\r\nContent-Length: 1000\r\n\r\n"
            + b"x" * 10
        )
        assert (await answer(reader))[0] == 401
        writer.write(b"x" * 10)  # a byte more, then silence
        assert await closed(reader)
        writer.close()
        assert served.sample("imgcls_http_connections_closed_total", reason="body_timeout") == 1


async def test_a_body_left_unread_but_completed_keeps_the_connection() -> None:
    async with live(api_tokens="s3cret") as served:
        reader, writer = await served.connect()
        request = (
            b"POST /v1/classify HTTP/1.1\r\nContent-Type: image/png\r\nContent-Length: 20\r\n\r\n"
        )
        writer.write(request + b"x" * 10)
        assert (await answer(reader))[0] == 401
        writer.write(b"x" * 10 + b"GET /livez HTTP/1.1\r\n\r\n")
        assert (await answer(reader))[0] == 200
        writer.close()


async def test_a_failure_inside_the_protocol_is_a_500_that_hides_its_text(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(self: object, scope: object) -> None:
        raise RuntimeError("a secret detail")

    monkeypatch.setattr(EarlyDoor, "decide", broken)
    async with live() as served:
        status, _, body = await ask(
            served,
            b"POST /v1/classify HTTP/1.1\r\nContent-Type: image/png\r\nContent-Length: 3\r\n\r\n"
            b"img",
        )
    assert status == 500
    message = body["error"]["message"]  # type: ignore[index]
    assert message.startswith("internal error; see server logs for request ")
    assert "secret" not in json.dumps(body)


async def test_garbage_after_a_request_ends_the_connection_after_its_answer(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The request's answer is under way when the garbage is parsed: it is the connection's last
    answer, whole, and nothing is written over it."""
    async with live() as served:
        reader, writer = await served.connect()
        writer.write(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n\x00garbage")
        status, headers, body = await answer(reader)
        assert (status, headers["connection"], json.loads(body)) == (200, "close", {"status": "ok"})
        assert await closed(reader)
        writer.close()
    assert "Exception in ASGI application" not in caplog.text
