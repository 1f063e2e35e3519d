"""One client cannot take the service down (issue 22, findings 1, 2, 3 and 16), against a real
``python -m service`` with its default limits and clocks:

1. uploads that stall or trickle hold no admission place: a good caller keeps getting answers,
   the stalled ones get 408 when their body clock runs out, nobody gets 503;
2. silent connections are closed by the head clock, and probes answer while they fill the
   connection cap;
3. an oversized head is refused (431) after tens of kilobytes, not buffered;
16. an unknown method and an over-long target get the JSON error shape (405 with Allow, 414).
And a slow but steady upload (a phone on 3G) is not mistaken for a stalled one.
"""

from __future__ import annotations

import asyncio
import io
import re
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.e2e.conftest import ServiceProcess, run_service, wait_until
from tests.e2e.rawclient import (
    Answer,
    address,
    ends,
    post_head,
    read_answer,
    write_quietly,
)

pytestmark = pytest.mark.slow

QUEUE_CAPACITY = 64  # IMGCLS_QUEUE_CAPACITY's default
HEAD_TIMEOUT_S = 10.0  # IMGCLS_HTTP_HEAD_TIMEOUT_S's default
BODY_IDLE_TIMEOUT_S = 10.0  # IMGCLS_BODY_IDLE_TIMEOUT_S's default
CONNECTION_CAP = 1024  # IMGCLS_HTTP_LIMIT_CONCURRENCY's default
GOOD_CALLER = "127.0.0.2"  # another source address than the hostile clients'


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, trained_model_dir: Path) -> Iterator[Any]:
    """A server of its own, defaults unchanged: the memory baseline is this test's alone."""
    with run_service(tmp_path_factory.mktemp("hostile"), trained_model_dir) as process:
        yield process


def metric(server: ServiceProcess, name: str) -> float:
    text = httpx.get(f"{server.url}/metrics", timeout=5).text
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def top1(answer: httpx.Response) -> int:
    index: int = answer.json()["predictions"][0]["class_index"]
    return index


# -- finding 1: stalled uploads ------------------------------------------------------------


def test_stalled_and_trickling_uploads_take_no_place_from_a_good_caller(
    server: ServiceProcess, photo_bytes: Callable[[str], bytes], photos: dict[str, Any]
) -> None:
    image = photo_bytes("rocket.jpg")  # 112 KB
    answers, good = asyncio.run(_hostile_uploads(server, image, 2 * QUEUE_CAPACITY))
    stalled, trickling = answers[: 2 * QUEUE_CAPACITY], answers[2 * QUEUE_CAPACITY :]
    assert {a.status for a in stalled} == {408}
    assert {a.json()["error"]["code"] for a in stalled} == {"request_timeout"}
    # The trickling ones (1 KB/s, under the 4 KB/s minimum) are timed out too, never refused.
    assert {a.status for a in trickling} <= {408, None}
    assert len(good) >= 10
    timeline = [f"{at:.2f}+{elapsed:.2f}s" for _, _, at, elapsed in good]  # for a failure's message
    for status, index, _, elapsed_s in good:
        assert (status, index in photos["rocket.jpg"]["accept"]) == (200, True)
        assert elapsed_s < 1.0, timeline
    wait_until(
        lambda: metric(server, "imgcls_request_body_bytes") == 0, 5, "bodies given back", None
    )


async def _hostile_uploads(
    server: ServiceProcess, image: bytes, count: int
) -> tuple[list[Answer], list[tuple[int, int, float, float]]]:
    head = post_head("/v1/classify", len(image))
    stalled = [
        asyncio.create_task(_stall(server, head + image[: len(image) // 2])) for _ in range(count)
    ]
    trickling = [asyncio.create_task(_trickle(server, head, image)) for _ in range(count)]
    hostile = [*stalled, *trickling]
    good: list[tuple[int, int, float, float]] = []  # status, top-1, sent at, answered after
    began = time.monotonic()
    transport = httpx.AsyncHTTPTransport(local_address=GOOD_CALLER)
    deadline = time.monotonic() + BODY_IDLE_TIMEOUT_S + 15  # bounded if they are never timed out
    async with httpx.AsyncClient(transport=transport, timeout=30) as client:
        await asyncio.sleep(0.5)  # every hostile upload has begun
        while not all(task.done() for task in stalled) and time.monotonic() < deadline:
            started = time.monotonic()
            response = await client.post(
                f"{server.url}/v1/classify", content=image, headers={"Content-Type": "image/jpeg"}
            )
            index = top1(response) if response.status_code == 200 else -1
            good.append((response.status_code, index, started - began, time.monotonic() - started))
    await asyncio.wait(hostile, timeout=max(0.1, deadline - time.monotonic()))
    unanswered = Answer(-1, {}, b"")  # still waiting: never timed out
    return [t.result() if t.done() else unanswered for t in hostile], good


async def _stall(server: ServiceProcess, sent: bytes) -> Answer:
    reader, writer = await asyncio.open_connection(*address(server))
    writer.write(sent)
    answer = await read_answer(reader)
    writer.close()
    return answer


async def _trickle(server: ServiceProcess, head: bytes, image: bytes) -> Answer:
    reader, writer = await asyncio.open_connection(*address(server))
    answer = asyncio.create_task(read_answer(reader))
    sent = head
    for offset in range(0, len(image), 1024):
        if answer.done() or not await write_quietly(writer, sent):
            break
        await asyncio.wait([answer], timeout=1.0)
        sent = image[offset : offset + 1024]
    writer.close()
    return await answer


# -- finding 2: silent connections -----------------------------------------------------------


def test_silent_connections_are_closed_and_probes_answer_meanwhile(server: ServiceProcess) -> None:
    host, port = address(server)
    fds = _open_fds(server)
    silent = [socket.create_connection((host, port)) for _ in range(CONNECTION_CAP + 6)]
    opened = time.monotonic()
    partial = socket.create_connection((host, port))
    partial.sendall(b"GET /livez HTTP/1.1\r\n")  # a request line, and nothing more
    try:
        wait_until(  # /metrics is over the cap too: the server's descriptors, from /proc
            lambda: _open_fds(server) >= fds + len(silent),
            HEAD_TIMEOUT_S / 2,
            "every silent connection accepted",
            server.log,
        )
        for probe in ("/livez", "/readyz", "/v2/health/live", "/v2/health/ready"):
            started = time.monotonic()
            answer = httpx.get(server.url + probe, timeout=5)
            assert (answer.status_code, probe) == (200, probe)
            assert time.monotonic() - started < 1.0
        # Past the cap, anything else is refused in the JSON shape, not uvicorn's plain text.
        refused = httpx.get(server.url + "/v1/model", timeout=5)
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "overloaded"
        assert refused.headers["Connection"] == "close"
        # The head clock closes every one of them (and answers the partial head with 408).
        partial.settimeout(HEAD_TIMEOUT_S + 10)
        assert partial.recv(1024).startswith(b"HTTP/1.1 408 ")
        for connection in silent:
            connection.settimeout(max(0.1, opened + HEAD_TIMEOUT_S + 10 - time.monotonic()))
            assert connection.recv(1) == b""
        assert time.monotonic() - opened >= HEAD_TIMEOUT_S - 1
    finally:
        for connection in (*silent, partial):
            connection.close()
    assert httpx.get(server.url + "/v1/model", timeout=5).status_code == 200
    closed = 'imgcls_http_connections_closed_total{reason="head_timeout"}'
    assert metric(server, closed) >= len(silent)


def _open_fds(server: ServiceProcess) -> int:
    return len(list(Path(f"/proc/{server.process.pid}/fd").iterdir()))


# -- finding 3: unbounded request heads ------------------------------------------------------


def test_oversized_heads_are_refused_without_being_buffered(server: ServiceProcess) -> None:
    status = Path(f"/proc/{server.process.pid}/status")
    baseline_mb = _vm(status, "VmRSS")
    Path(f"/proc/{server.process.pid}/clear_refs").write_text("5")  # restart VmHWM from here
    many = (  # 20 MB of small headers, 64 KB at a time
        b"".join(b"X-Filler-%08d: y\r\n" % (i + j) for j in range(3200))
        for i in range(0, 1_000_000, 3200)
    )
    one = (b"v" * 65536 for _ in range(3200))  # one 200 MB header value
    answers, probes = asyncio.run(
        _with_probes(server, [_head_flood(server, b"", many), _head_flood(server, b"X-Big: ", one)])
    )
    for answer in answers:
        assert answer.status == 431
        assert answer.json()["error"]["code"] == "headers_too_large"
        assert answer.headers["connection"] == "close"
    assert _vm(status, "VmHWM") - baseline_mb < 100
    assert {s for s, _ in probes} == {200}
    assert max(elapsed for _, elapsed in probes) < 0.5


def _vm(status: Path, field: str) -> float:
    return int(status.read_text().split(f"{field}:")[1].split()[0]) / 1024


async def _head_flood(server: ServiceProcess, prefix: bytes, lines: Iterator[bytes]) -> Answer:
    reader, writer = await asyncio.open_connection(*address(server))
    answer = asyncio.create_task(read_answer(reader))
    if await write_quietly(writer, b"GET /livez HTTP/1.1\r\nHost: imgcls\r\n" + prefix):
        for line in lines:
            if answer.done() or not await write_quietly(writer, line):
                break
    writer.close()
    async with asyncio.timeout(30):
        return await answer


async def _with_probes(
    server: ServiceProcess, floods: list[Any]
) -> tuple[list[Answer], list[tuple[int, float]]]:
    """Run ``floods`` while another client asks /livez every 50 ms."""
    probes: list[tuple[int, float]] = []
    tasks = [asyncio.create_task(flood) for flood in floods]
    async with httpx.AsyncClient(timeout=10) as client:
        while not all(task.done() for task in tasks):
            started = time.monotonic()
            answer = await client.get(server.url + "/livez")
            probes.append((answer.status_code, time.monotonic() - started))
            await asyncio.sleep(0.05)
    return [task.result() for task in tasks], probes


# -- finding 16: unknown methods and long targets --------------------------------------------


def test_an_unknown_method_and_a_long_target_get_the_json_error_shape(
    server: ServiceProcess,
) -> None:
    query = "&".join(f"p{i}=1" for i in range(10_000))
    unknown, long_target = asyncio.run(
        _ask_all(
            server,
            [
                b"FOO /v1/classify HTTP/1.1\r\nHost: imgcls\r\n\r\n",
                f"GET /livez?{query} HTTP/1.1\r\nHost: imgcls\r\n\r\n".encode(),
            ],
        )
    )
    assert (unknown.status, unknown.headers["allow"]) == (405, "POST")
    assert unknown.json() == {
        "error": {"code": "method_not_allowed", "message": "Method Not Allowed"}
    }
    assert long_target.status == 414
    assert long_target.json()["error"]["code"] == "uri_too_long"
    for answer in (unknown, long_target):
        assert answer.headers["content-type"] == "application/json"
        assert answer.headers["connection"] == "close"


async def _ask_all(server: ServiceProcess, requests: list[bytes]) -> list[Answer]:
    answers = []
    for raw in requests:
        reader, writer = await asyncio.open_connection(*address(server))
        writer.write(raw)
        answers.append(await read_answer(reader))
        assert await ends(reader)
        writer.close()
    return answers


# -- a slow but steady upload ----------------------------------------------------------------


def test_a_slow_but_steady_3_mb_upload_at_64_kb_per_s_succeeds(
    server: ServiceProcess, photo_bytes: Callable[[str], bytes], photos: dict[str, Any]
) -> None:
    image = _phone_photo(photo_bytes("rocket.jpg"))
    assert len(image) >= 3_000_000
    answer = asyncio.run(_steady(server, image, 64 * 1024))
    assert answer.status == 200, answer.body
    assert answer.json()["predictions"][0]["class_index"] in photos["rocket.jpg"]["accept"]


def _phone_photo(photo: bytes) -> bytes:
    """A phone-sized JPEG of the photo (6.8 MP, with sensor-like noise): over 3 MB."""
    small = Image.open(io.BytesIO(photo)).convert("RGB")
    pixels = np.asarray(small.resize((small.width * 5, small.height * 5)), dtype=np.int16)
    noise = np.random.default_rng(0).integers(-16, 17, pixels.shape, dtype=np.int16)
    out = io.BytesIO()
    Image.fromarray(np.clip(pixels + noise, 0, 255).astype(np.uint8)).save(out, "JPEG", quality=95)
    return out.getvalue()


async def _steady(server: ServiceProcess, image: bytes, rate: int) -> Answer:
    reader, writer = await asyncio.open_connection(*address(server))
    writer.write(post_head("/v1/classify", len(image)))
    for offset in range(0, len(image), rate // 4):  # a quarter of a second's worth at a time
        await asyncio.sleep(0.25)
        writer.write(image[offset : offset + rate // 4])
        await writer.drain()
    answer = await read_answer(reader)
    writer.close()
    return answer
