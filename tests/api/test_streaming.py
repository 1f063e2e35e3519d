"""What only hand-made ASGI messages can show: the byte limit stops reading a chunked body at
the first chunk over it, and a client that disconnects while its image waits cancels the work
(counted and logged), for one image and for a batch."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from service.settings import Settings
from tests.api.asgi import ScriptedClient, call, http_scope
from tests.api.conftest import Served, fake_factory, serve

pytestmark = pytest.mark.anyio


def rejections(served: Served, reason: str) -> float:
    value = served.metrics.registry.get_sample_value("imgcls_rejections_total", {"reason": reason})
    return value or 0.0


async def test_413_stops_reading_a_chunked_body_at_the_limit() -> None:
    async with serve(Settings(max_upload_bytes=2500), fake_factory()) as served:
        client = ScriptedClient([b"\xff" * 1000] * 10)  # no Content-Length: chunked
        await call(served.app, http_scope("/v1/classify", {"Content-Type": "image/jpeg"}), client)
    assert client.status == 413
    assert json.loads(client.body) == {
        "error": {
            "code": "image_too_large",
            "message": "the request body exceeds the limit of 2500 bytes",
        }
    }
    assert client.chunks_read == 3  # refused at the first chunk over; 7 chunks never read


async def test_413_from_content_length_reads_nothing() -> None:
    async with serve(Settings(max_upload_bytes=2500), fake_factory()) as served:
        client = ScriptedClient([b"\xff" * 1000] * 10)
        headers = {"Content-Type": "image/jpeg", "Content-Length": "10000"}
        await call(served.app, http_scope("/v1/classify", headers), client)
    assert client.status == 413
    assert client.chunks_read == 0


@pytest.mark.parametrize(
    ("path", "content_type", "body", "images"),
    [
        ("/v1/classify", "image/png", b"img", 1),
        ("/v1/classify/batch", "application/json", b'{"images": ["aW1n", "aW1n", "aW1n"]}', 3),
    ],
)
async def test_disconnect_while_waiting_cancels_the_work(
    caplog: pytest.LogCaptureFixture, path: str, content_type: str, body: bytes, images: int
) -> None:
    async with serve(Settings(), fake_factory(hold=True)) as served:
        fake = served.classifier
        client = ScriptedClient([body])
        request = asyncio.create_task(
            call(served.app, http_scope(path, {"Content-Type": content_type}), client)
        )
        await fake.wait_admitted(images)  # every image is waiting inside classify
        with caplog.at_level(logging.INFO, logger="service.http.errors"):
            client.disconnect.set()
            await request
        assert fake.cancelled == images
        assert fake.in_flight == 0
        assert rejections(served, "client_disconnected") == 1.0
        assert client.status == 499
    assert "client disconnected while waiting" in caplog.text


async def test_no_disconnect_no_cancel() -> None:
    async with serve(Settings(), fake_factory(hold=True)) as served:
        fake = served.classifier
        client = ScriptedClient([b"img"])
        scope = http_scope("/v1/classify", {"Content-Type": "image/png"})
        request = asyncio.create_task(call(served.app, scope, client))
        await fake.wait_admitted(1)
        fake.release.set()
        await request
        assert client.status == 200
        assert fake.cancelled == 0
        assert rejections(served, "client_disconnected") == 0.0
