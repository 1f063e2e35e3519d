"""Cache-Status (RFC 9211) on the REST answers when the response cache is on: /v1 single and
batch, /v2 infer with encoded images and with pixels; absent when it is off or nothing was
answered. A hit is still a request: counted in the request metrics and the access log. The real
app in-process, on the tiny model."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from service.observability.logs import ACCESS_LOGGER
from service.settings import Settings
from tests.api.conftest import Served, serve
from tests.unit.tiny import colour_batch, colour_png, write_tiny_artifacts

pytestmark = pytest.mark.anyio

PNG = {"Content-Type": "image/png"}
INFER = "/v2/models/tiny/infer"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_artifacts(tmp_path_factory.mktemp("artifacts") / "tiny")


@pytest.fixture
async def cached(model_dir: Path) -> AsyncIterator[Served]:
    settings = Settings(model_dir=model_dir, provider="cpu", cache_bytes=1 << 20)
    async with serve(settings) as served:
        yield served


async def test_v1_classify_says_miss_then_hit(
    cached: Served, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    image = colour_png(427)
    first = await cached.client.post("/v1/classify", content=image, headers=PNG)
    second = await cached.client.post("/v1/classify?top_k=3", content=image, headers=PNG)

    assert first.status_code == second.status_code == 200
    assert first.headers["Cache-Status"] == "imgcls; fwd=miss"
    assert second.headers["Cache-Status"] == "imgcls; hit"
    assert second.json()["predictions"][0] == first.json()["predictions"][0]
    assert len(second.json()["predictions"]) == 3
    assert second.json()["timing"]["batch_size"] == 0  # nothing ran

    metrics = (await cached.client.get("/metrics")).text
    assert 'imgcls_http_requests_total{method="POST",route="/v1/classify",status="200"} 2.0' in (
        metrics
    )
    assert 'imgcls_cache_requests_total{outcome="hit"} 1.0' in metrics
    access = [r.__dict__ for r in caplog.records if r.name == ACCESS_LOGGER]
    classify = [r for r in access if r["route"] == "/v1/classify"]
    assert [(r["status"], r["cache"]) for r in classify] == [
        (200, "imgcls; fwd=miss"),
        (200, "imgcls; hit"),
    ]


async def test_v1_batch_counts_each_image(cached: Served) -> None:
    a, b = base64.b64encode(colour_png(1)).decode(), base64.b64encode(colour_png(2)).decode()
    body = {"images": [a, a, b]}

    first = await cached.client.post("/v1/classify/batch", json=body)
    second = await cached.client.post("/v1/classify/batch", json=body)

    assert first.status_code == second.status_code == 200
    # The two copies of "a" in one request: one computed, the other waited for it.
    assert first.headers["Cache-Status"] == ('imgcls; fwd=miss; detail="hit=0 collapsed=1 miss=2"')
    assert second.headers["Cache-Status"] == "imgcls; hit"
    labels = [item["predictions"][0]["class_index"] for item in second.json()["results"]]
    assert labels == [1, 1, 2]


async def test_v2_infer_with_encoded_images_and_with_pixels(cached: Served) -> None:
    encoded = {
        "inputs": [
            {
                "name": "image",
                "datatype": "BYTES",
                "shape": [1],
                "data": [base64.b64encode(colour_png(5)).decode()],
            }
        ]
    }
    pixels = colour_batch([5])
    raw = {"inputs": [{"name": "image", "datatype": "UINT8", "shape": list(pixels.shape)}]}
    raw["inputs"][0]["data"] = pixels.flatten().tolist()

    answers = [await cached.client.post(INFER, json=body) for body in (encoded, encoded, raw, raw)]

    assert [a.status_code for a in answers] == [200] * 4
    assert [a.headers["Cache-Status"] for a in answers] == [
        "imgcls; fwd=miss",
        "imgcls; hit",
        "imgcls; fwd=miss",  # pixels are keyed apart from the encoded image they came from
        "imgcls; hit",
    ]
    logits = [json.loads(a.content)["outputs"][0]["data"] for a in answers]
    assert logits[1] == logits[0]


async def test_no_header_when_the_cache_is_off_or_nothing_was_answered(
    cached: Served, model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    refused = await cached.client.post("/v1/classify", content=b"not an image", headers=PNG)
    assert refused.status_code == 400
    assert "Cache-Status" not in refused.headers

    async with serve(Settings(model_dir=model_dir, provider="cpu")) as off:
        answered = await off.client.post("/v1/classify", content=colour_png(3), headers=PNG)
    assert answered.status_code == 200
    assert "Cache-Status" not in answered.headers
    access = [r for r in caplog.records if r.name == ACCESS_LOGGER]
    assert [hasattr(r, "cache") for r in access] == [False, False]  # the 400, and cache off


async def test_cors_lets_a_browser_read_the_header(model_dir: Path) -> None:
    settings = Settings(
        model_dir=model_dir, provider="cpu", cache_bytes=1 << 20, cors_origins="https://a.test"
    )
    async with serve(settings) as served:
        response = await served.client.post(
            "/v1/classify", content=colour_png(3), headers=PNG | {"Origin": "https://a.test"}
        )
    assert "cache-status" in response.headers["Access-Control-Expose-Headers"].lower()
