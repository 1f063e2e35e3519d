"""The Python load generator's HTTP client (bench.loadgen.http1.RawSender) against the same small
real server as the C one: an answer that never comes is recorded after a bound, not waited for,
and its connection is not reused."""

from __future__ import annotations

import time

import pytest

from bench.loadgen import http1
from bench.loadgen.http1 import RawSender
from tests.bench.http_server import serving

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_an_answer_that_never_comes_is_recorded_after_the_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(http1, "ANSWER_TIMEOUT_S", 0.3)  # 60 s by default
    async with serving() as server:
        sender = RawSender(f"http://127.0.0.1:{server.port}/never", 1)
        outcome = await sender.post(b"x" * 100, time.perf_counter())
        answered = RawSender(f"http://127.0.0.1:{server.port}/ok", 1)
        ok = await answered.post(b"x" * 100, time.perf_counter())
        await sender.aclose()
        await answered.aclose()
    assert outcome.status == "NoAnswer"
    assert 300 <= outcome.latency_ms < 2000
    assert sender.idle == []  # its connection was closed, not kept for the next request
    assert ok.status == 200
