"""/v2 while the service is not serving (tests/api's fake, whose lifecycle is the real one):
readiness says why with a 503, as /readyz does; the model routes answer the protocol's
{"error": ...} 503 instead of guessing at a model that is not loaded."""

from __future__ import annotations

import pytest

from service.settings import Settings
from tests.api.conftest import fake_factory, serve

pytestmark = pytest.mark.anyio


async def test_while_loading_liveness_holds_and_readiness_says_why() -> None:
    async with serve(Settings(), fake_factory(hold_start=True), wait_started=False) as served:
        assert (await served.client.get("/v2/health/live")).status_code == 200
        ready = await served.client.get("/v2/health/ready")
        assert ready.status_code == 503
        assert ready.json() == {"ready": False, "reason": "loading"}
        for path in ("/v2/models/efficientnet_lite0", "/v2/models/efficientnet_lite0/ready"):
            response = await served.client.get(path)
            assert response.status_code == 503
            assert "not loaded" in response.json()["error"]
        image = {"name": "image", "datatype": "BYTES", "shape": [1], "data": ["eA=="]}
        request = {"inputs": [image]}
        infer = await served.client.post("/v2/models/efficientnet_lite0/infer", json=request)
        assert infer.status_code == 503
        assert set(infer.json()) == {"error"}
        served.classifier.release.set()


async def test_draining_turns_readiness_503_at_once() -> None:
    async with serve(Settings(), fake_factory()) as served:
        served.classifier.begin_drain()
        ready = await served.client.get("/v2/health/ready")
        assert (ready.status_code, ready.json()["reason"]) == (503, "draining")
        assert (await served.client.get("/v2/health/live")).status_code == 200
