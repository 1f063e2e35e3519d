"""Large declared bodies kept alive cannot hold the body budget from everyone else (issue 22),
against a real ``python -m service`` whose budget fits exactly two maximum-size batch bodies:

Two batch uploads declare the maximum size and trickle it (6 and 8 KiB/s, above the body clock's
4 KiB/s minimum): the budget is full. A phone then uploads a 3 MB photo at 64 KB/s and a good
caller a 2 MB one at full speed. Each newcomer evicts the slowest trickle (408 request_timeout,
connection closed) and is answered with the right class; the phone, 47 s from done and under
IMGCLS_BODY_CONTENDED_FINISH_S, is never evicted, though the budget stays contended.
Before eviction, both newcomers got 503 overloaded at once, for as long as the trickles went on.
"""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.e2e.conftest import ServiceProcess, run_service
from tests.e2e.rawclient import Answer, address, post_head, read_answer, write_quietly

pytestmark = pytest.mark.slow

MAX_BODY = 4 * 1024 * 1024  # IMGCLS_MAX_REQUEST_BYTES and IMGCLS_MAX_UPLOAD_BYTES here
BUDGET = 2 * MAX_BODY  # IMGCLS_BODY_BUDGET_BYTES: two trickles of MAX_BODY fill it
GRACE_S = 2.0  # before it, a body's rate is not judged (service/limits/body_budget.py)
PHONE_RATE = 64 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, trained_model_dir: Path) -> Iterator[Any]:
    env = {
        "IMGCLS_MAX_UPLOAD_BYTES": str(MAX_BODY),
        "IMGCLS_MAX_REQUEST_BYTES": str(MAX_BODY),
        "IMGCLS_BODY_BUDGET_BYTES": str(BUDGET),
    }
    with run_service(tmp_path_factory.mktemp("contended"), trained_model_dir, **env) as process:
        yield process


def photo_of(photo: bytes, scale: float) -> bytes:
    """A larger JPEG of the photo, with sensor-like noise (as a phone camera's)."""
    small = Image.open(io.BytesIO(photo)).convert("RGB")
    size = (round(small.width * scale), round(small.height * scale))
    pixels = np.asarray(small.resize(size), dtype=np.int16)
    noise = np.random.default_rng(0).integers(-16, 17, pixels.shape, dtype=np.int16)
    out = io.BytesIO()
    Image.fromarray(np.clip(pixels + noise, 0, 255).astype(np.uint8)).save(out, "JPEG", quality=95)
    return out.getvalue()


def test_slow_large_bodies_are_evicted_for_newcomers_and_a_phone_upload_is_not(
    server: ServiceProcess, photo_bytes: Callable[[str], bytes], photos: dict[str, Any]
) -> None:
    rocket = photo_bytes("rocket.jpg")
    phone, good = photo_of(rocket, 4.65), photo_of(rocket, 4.0)
    assert 3_000_000 <= len(phone) < 3_300_000
    assert 2_000_000 <= len(good) < 2_400_000
    outcome = asyncio.run(_contended(server, phone, good))
    accept = photos["rocket.jpg"]["accept"]

    slowest, slow = outcome["trickles"]
    for trickle in (slowest, slow):  # each evicted: 408 in the JSON shape, connection closed
        assert trickle.status == 408, trickle.body
        assert trickle.headers["connection"] == "close"
        error = trickle.json()["error"]
        assert error["code"] == "request_timeout"
        assert "too slowly for a server whose body budget is full" in error["message"]
    # The slowest went for the phone; the other stayed until the good caller needed room too.
    assert outcome["after_phone"] == (True, False)

    good_answer = outcome["good"]
    assert good_answer.status_code == 200, good_answer.text
    assert good_answer.json()["predictions"][0]["class_index"] in accept
    assert outcome["good_before_phone_done"]  # answered while the phone was still uploading

    phone_answer = outcome["phone"]
    assert phone_answer.status == 200, phone_answer.body
    assert phone_answer.json()["predictions"][0]["class_index"] in accept


async def _contended(server: ServiceProcess, phone: bytes, good: bytes) -> dict[str, Any]:
    head = post_head("/v1/classify/batch", MAX_BODY, "multipart/form-data; boundary=x")
    # The slower trickle first: its projected finish is the furthest.
    trickles = [asyncio.create_task(_paced(server, head, MAX_BODY, rate)) for rate in (6144, 8192)]
    await asyncio.sleep(GRACE_S + 1.5)  # both judged: the budget is full of slow bodies
    assert not any(t.done() for t in trickles), [t.result() for t in trickles if t.done()]

    phone_task = asyncio.create_task(
        _paced(server, post_head("/v1/classify", len(phone)), len(phone), PHONE_RATE, phone)
    )
    await asyncio.wait(trickles, timeout=5, return_when=asyncio.FIRST_COMPLETED)
    after_phone = tuple(t.done() for t in trickles)

    await asyncio.sleep(GRACE_S + 1.0)  # the phone is judged too, 47 s from done
    async with httpx.AsyncClient(timeout=30) as client:
        good_answer = await client.post(
            f"{server.url}/v1/classify", content=good, headers={"Content-Type": "image/jpeg"}
        )
    good_before_phone_done = not phone_task.done()
    done, _ = await asyncio.wait(trickles, timeout=5)
    answers = [t.result() if t in done else Answer(-1, {}, b"still going") for t in trickles]
    for t in trickles:
        t.cancel()
    return {
        "trickles": answers,
        "after_phone": after_phone,
        "good": good_answer,
        "good_before_phone_done": good_before_phone_done,
        "phone": await asyncio.wait_for(phone_task, timeout=len(phone) / PHONE_RATE + 30),
    }


async def _paced(
    server: ServiceProcess, head: bytes, length: int, rate: int, body: bytes | None = None
) -> Answer:
    """Send ``head`` and then ``length`` body bytes (``body``, or filler) at ``rate`` bytes/s, a
    quarter of a second's worth at a time on a fixed schedule (so that the rate holds on a busy
    machine), reading the answer meanwhile, as an HTTP client does."""
    reader, writer = await asyncio.open_connection(*address(server))
    answer = asyncio.create_task(read_answer(reader))
    try:
        writer.write(head)
        step = rate // 4
        started = time.monotonic()
        for i, offset in enumerate(range(0, length, step)):
            end = min(offset + step, length)
            piece = body[offset:end] if body is not None else b"x" * (end - offset)
            if answer.done() or not await write_quietly(writer, piece):
                break
            await asyncio.wait([answer], timeout=max(0, started + (i + 1) / 4 - time.monotonic()))
        return await answer
    finally:
        answer.cancel()
        writer.close()
