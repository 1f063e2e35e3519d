"""``python -m service`` as a real process: SIGTERM drains (readiness 503 at once, admitted
requests all answered 200, new ones refused) and exits 0; a model that cannot start exits 1."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import ServiceProcess, run_service, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.anyio]

HELD = 6  # fewer than the batch size, so the batch waits out its whole window


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def queue_depth(server: ServiceProcess) -> int:
    details = httpx.get(f"{server.url}/readyz", timeout=2).json()["details"]
    depth: int = details["queue_depth"]
    return depth


async def test_sigterm_answers_every_admitted_request_then_exits_0(
    tmp_path: Path, trained_model_dir: Path, photo_bytes: Callable[[str], bytes]
) -> None:
    # A long batch window keeps the admitted requests queued while SIGTERM arrives, without
    # any timing in the test: they cannot finish before the window ends (5 s).
    env = {
        "IMGCLS_MAX_BATCH_SIZE": "8",
        "IMGCLS_MAX_BATCH_WAIT_S": "5",
        "IMGCLS_REQUEST_TIMEOUT_S": "60",
    }
    with run_service(tmp_path, trained_model_dir, **env) as server:
        data = photo_bytes("coffee.png")
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:

            async def classify() -> httpx.Response:
                headers = {"Content-Type": "image/png"}
                return await client.post("/v1/classify", content=data, headers=headers)

            held = [asyncio.create_task(classify()) for _ in range(HELD)]
            await asyncio.to_thread(
                wait_until, lambda: queue_depth(server) == HELD, 60, "6 queued", server.log
            )
            server.process.send_signal(signal.SIGTERM)
            await asyncio.to_thread(
                wait_until,
                lambda: httpx.get(f"{server.url}/readyz", timeout=2).status_code == 503,
                10,
                "readiness 503 after SIGTERM",
                server.log,
            )
            ready = await client.get("/readyz")
            refused = await classify()
            answers = await asyncio.gather(*held)
        exit_code = await asyncio.to_thread(server.process.wait, 60)
    assert ready.json()["reason"] == "draining"
    assert refused.status_code == 503
    assert refused.json() == {
        "error": {"code": "draining", "message": "the server is shutting down"}
    }
    assert [r.status_code for r in answers] == [200] * HELD
    assert all(r.json()["predictions"][0]["label"] == "espresso" for r in answers)
    assert exit_code == 0
    messages = [json.loads(line)["message"] for line in server.log_text().splitlines()]
    assert any(m.startswith("signal SIGTERM: draining") for m in messages)
    assert "drained" in messages


def test_a_model_that_cannot_start_exits_1(tmp_path: Path) -> None:
    empty = tmp_path / "no-model"
    empty.mkdir()
    with run_service(tmp_path, empty, wait_ready=False) as server:
        exit_code = server.process.wait(timeout=60)
        records: list[dict[str, Any]] = [json.loads(x) for x in server.log_text().splitlines()]
    assert exit_code == 1
    critical = [r for r in records if r["level"] == "CRITICAL"]
    assert critical
    assert "no manifest.json" in critical[0]["exc_info"]
