"""Liveness, readiness through the lifecycle (starting -> ready -> draining), the drain that
lets admitted requests finish while refusing new ones, and /v1/model."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from service.app import drain
from service.http.state import service_state
from service.model import int8_weights as isa
from service.model.manifest import file_entry, load_manifest, write_manifest
from service.settings import Settings
from tests.api.conftest import Served, fake_factory, serve
from tests.unit.tiny import write_tiny_artifacts

pytestmark = pytest.mark.anyio


async def test_livez_is_200_while_the_model_loads() -> None:
    async with serve(Settings(), fake_factory(hold_start=True), wait_started=False) as served:
        response = await served.client.get("/livez")
        assert (response.status_code, response.json()) == (200, {"status": "ok"})
        served.classifier.release.set()


async def test_readyz_503_until_start_returns_then_200() -> None:
    async with serve(Settings(), fake_factory(hold_start=True), wait_started=False) as served:
        before = await served.client.get("/readyz")
        classify = await served.client.post(
            "/v1/classify", content=b"img", headers={"Content-Type": "image/png"}
        )
        served.classifier.release.set()
        await service_state(served.app).start_task
        after = await served.client.get("/readyz")
    assert before.status_code == 503
    assert before.json() == {"ready": False, "reason": "loading", "details": {"in_flight": 0}}
    assert classify.status_code == 503
    assert classify.json()["error"]["code"] == "not_ready"
    assert classify.headers["Retry-After"] == "1"
    assert after.status_code == 200
    assert after.json() == {"ready": True, "reason": None, "details": {"in_flight": 0}}


async def test_readyz_gives_a_fixed_reason_when_the_model_fails_to_load(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A model file ONNX Runtime cannot parse, listed in its manifest with its right sha256:
    # the failure is ORT's own, and its text names the file's path.
    model_dir = write_tiny_artifacts(tmp_path / "tiny")
    manifest = load_manifest(model_dir)
    served = isa.exact_int8_file()  # the int8 file this CPU loads
    model_file = model_dir / manifest.files[served].path
    model_file.write_bytes(b"not an onnx model")
    files = {**manifest.files, served: file_entry(model_dir, model_file)}
    write_manifest(model_dir, manifest.model_copy(update={"files": files}))
    settings = Settings(model_dir=model_dir, provider="cpu", intra_op_threads=1)
    with caplog.at_level(logging.INFO):
        async with serve(settings) as served:
            ready = await served.client.get("/readyz")
            classify = await served.client.post(
                "/v1/classify", content=b"img", headers={"Content-Type": "image/png"}
            )
    assert ready.status_code == 503
    assert ready.json() == {
        "ready": False,
        "reason": "model failed to load",
        "details": {"state": "failed", "in_flight": 0},
    }
    assert classify.status_code == 503
    assert classify.json() == {
        "error": {"code": "not_ready", "message": "the model is not ready (failed)"}
    }
    # The detail is logged once, with its traceback, and reaches neither body.
    [record] = [r for r in caplog.records if r.exc_info]
    assert record.name == "service.app"
    assert record.exc_info is not None
    load_error = record.exc_info[1]
    load_text = str(load_error)
    assert "ONNXRuntimeError" in load_text
    assert load_text in caplog.text
    assert "Traceback" in caplog.text
    for leak in (load_text, "ONNXRuntimeError", type(load_error).__name__, str(tmp_path)):
        assert leak not in ready.text
        assert leak not in classify.text


async def test_drain_finishes_admitted_requests_and_refuses_new_ones() -> None:
    async with serve(Settings(), fake_factory(hold=True)) as served:
        fake = served.classifier

        async def classify() -> tuple[int, dict[str, object]]:
            response = await served.client.post(
                "/v1/classify", content=b"img", headers={"Content-Type": "image/png"}
            )
            return response.status_code, response.json()

        admitted = [asyncio.create_task(classify()) for _ in range(5)]
        await fake.wait_admitted(5)
        draining = asyncio.create_task(drain(served.app, timeout_s=30))
        await asyncio.sleep(0)  # let drain() run up to its wait: begin_drain() is synchronous
        ready = await served.client.get("/readyz")
        refused = await classify()
        assert not draining.done()  # five requests are still held
        fake.release.set()
        answers = await asyncio.gather(*admitted)
        await draining
    assert (ready.status_code, ready.json()["reason"]) == (503, "draining")
    assert refused == (
        503,
        {"error": {"code": "draining", "message": "the server is shutting down"}},
    )
    assert [status for status, _ in answers] == [200] * 5


async def test_model_endpoint(real: Served) -> None:
    response = await real.client.get("/v1/model")
    assert response.status_code == 200
    body = response.json()
    meta = real.classifier.meta
    assert (body["name"], body["version"], body["untrained"]) == (
        "efficientnet_lite0",
        meta.version,
        False,
    )
    assert body["num_classes"] == 1000
    assert body["input_shape"] == [224, 224, 3]
    assert body["provider"] in ("CPUExecutionProvider", "OpenVINOExecutionProvider")
    assert set(body["warmup_latency_ms"]) == {str(n) for n in meta.warmup_latency_s}
    # the accuracy of what serves: int8 as evaluated on the provider that was chosen
    evaluation = meta.manifest.evaluation
    assert evaluation is not None
    key = {"CPUExecutionProvider": "cpu", "OpenVINOExecutionProvider": "openvino"}[meta.provider]
    assert body["top1_int8"] == evaluation.int8_providers[key].int8.top1


async def test_untrained_flag_reaches_the_api() -> None:
    async with serve(Settings(), fake_factory(untrained=True)) as served:
        single = await served.client.post(
            "/v1/classify", content=b"img", headers={"Content-Type": "image/png"}
        )
        model = await served.client.get("/v1/model")
    assert single.json()["untrained"] is True
    assert model.json()["untrained"] is True


async def test_openapi_schema_lists_the_api() -> None:
    async with serve(Settings(), fake_factory()) as served:
        response = await served.client.get("/openapi.json")
        docs = await served.client.get("/docs")
    assert response.status_code == 200
    paths = response.json()["paths"]
    assert {"/v1/classify", "/v1/classify/batch", "/v1/model", "/livez", "/readyz"} <= set(paths)
    body = paths["/v1/classify"]["post"]["requestBody"]["content"]
    assert {
        "image/jpeg",
        "image/heic",
        "image/avif",
        "multipart/form-data",
        "application/json",
    } <= set(body)
    assert docs.status_code == 200


async def test_upload_page_is_self_contained() -> None:
    async with serve(Settings(), fake_factory()) as served:
        response = await served.client.get("/")
        script = await served.client.get("/static/page.js")
        style = await served.client.get("/static/page.css")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    page = response.text
    assert 'id="untrained"' in page
    assert '<script src="/static/page.js" defer></script>' in page
    assert "/v1/classify?top_k=${topK}" in script.text  # 3, or num_classes when fewer
    assert "topK = Math.min(3, body.num_classes)" in script.text
    assert style.headers["Content-Type"].startswith("text/css")
    for text in (page, script.text, style.text):  # no CDN, no external asset: works offline
        assert "://" not in text
