"""Every error, with its exact status and body. Image errors go through the real model; the
errors the model cannot be made to raise on demand (503, 504, 500) come from a fake."""

from __future__ import annotations

import asyncio
import base64
import io
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from PIL import Image

from service.errors import DeadlineExceeded, InferenceFailed, NotReady, Overloaded
from service.inference.batcher import MicroBatcher
from service.inference.classifier import Classifier
from service.inference.postprocess import Logits
from service.inference.preprocess import Pixels
from service.model.runner import Batch, Runner
from service.settings import Settings
from tests.api.conftest import Served, fake_factory, serve
from tests.unit.tiny import colour_png, write_tiny_artifacts

pytestmark = pytest.mark.anyio


def error(code: str, message: str) -> dict[str, dict[str, str]]:
    return {"error": {"code": code, "message": message}}


def encoded(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


async def classify_raw(served: Served, data: bytes, content_type: str, query: str = "") -> object:
    return await served.client.post(
        "/v1/classify" + query, content=data, headers={"Content-Type": content_type}
    )


# 400


async def test_400_not_an_image(real: Served) -> None:
    response = await real.client.post(
        "/v1/classify", content=b"GIF89a but nothing else", headers={"Content-Type": "image/gif"}
    )
    assert response.status_code == 400
    assert response.json() == error("bad_image", "the data is not a decodable image")


async def test_400_truncated_jpeg(real: Served, photo_bytes: Callable[[str], bytes]) -> None:
    data = photo_bytes("rocket.jpg")
    response = await real.client.post(
        "/v1/classify", content=data[: len(data) // 3], headers={"Content-Type": "image/jpeg"}
    )
    assert response.status_code == 400
    body = response.json()
    assert body["error"]["code"] == "bad_image"
    assert body["error"]["message"].startswith("the image could not be decoded")


async def test_400_empty_body(real: Served) -> None:
    response = await real.client.post(
        "/v1/classify", content=b"", headers={"Content-Type": "image/png"}
    )
    assert response.status_code == 400
    assert response.json() == error("bad_image", "the image is empty")


# 413


async def test_413_raw_body_over_the_byte_limit(trained_model_dir: Path) -> None:
    settings = Settings(model_dir=trained_model_dir, max_upload_bytes=1000)
    async with serve(settings) as served:
        response = await served.client.post(
            "/v1/classify", content=b"\xff" * 1001, headers={"Content-Type": "image/jpeg"}
        )
    assert response.status_code == 413
    assert response.json() == error(
        "image_too_large", "the request body is 1001 bytes; the limit is 1000"
    )


async def test_413_base64_image_over_the_byte_limit(trained_model_dir: Path) -> None:
    settings = Settings(model_dir=trained_model_dir, max_upload_bytes=1000)
    async with serve(settings) as served:
        image = base64.b64encode(b"\x00" * 1001).decode()
        response = await served.client.post("/v1/classify", json={"image": image})
    assert response.status_code == 413
    assert response.json() == error("image_too_large", "the image is 1001 bytes; the limit is 1000")


async def test_413_too_many_pixels_checked_from_the_header(real: Served) -> None:
    # 8000 x 6000 = 48 M pixels > the default 40 M; a flat PNG is a few tens of kB.
    data = encoded(Image.new("L", (8000, 6000)), "PNG")
    response = await real.client.post(
        "/v1/classify", content=data, headers={"Content-Type": "image/png"}
    )
    assert response.status_code == 413
    assert response.json() == error(
        "image_too_large",
        "the image is 8000x6000 = 48000000 pixels; the limit is 40000000",
    )


# 415


async def test_415_unsupported_content_type(real: Served) -> None:
    response = await real.client.post(
        "/v1/classify", content=b"hello", headers={"Content-Type": "text/plain"}
    )
    assert response.status_code == 415
    body = response.json()
    assert body["error"]["code"] == "unsupported_media_type"
    assert body["error"]["message"].startswith("unsupported Content-Type 'text/plain'")


async def test_415_unsupported_image_type_declared(real: Served) -> None:
    response = await real.client.post(
        "/v1/classify", content=b"<svg/>", headers={"Content-Type": "image/svg+xml"}
    )
    assert response.status_code == 415
    assert response.json()["error"]["code"] == "unsupported_media_type"


async def test_415_unsupported_image_format_sniffed(real: Served) -> None:
    data = encoded(Image.new("RGB", (32, 32)), "PPM")
    response = await real.client.post(
        "/v1/classify", content=data, headers={"Content-Type": "application/octet-stream"}
    )
    assert response.status_code == 415
    assert response.json() == error(
        "unsupported_media_type",
        "image format PPM is not supported; "
        "send JPEG, PNG, WebP, GIF, BMP, TIFF, HEIC/HEIF or AVIF",
    )


# 422


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("?top_k=0", "top_k: Input should be greater than or equal to 1"),
        ("?top_k=1001", "top_k must be in 1..1000, got 1001"),  # the model's class count
        ("?top_k=many", "top_k: Input should be a valid integer, unable to parse string as an "
         "integer"),
    ],
)  # fmt: skip
async def test_422_bad_top_k(real: Served, query: str, message: str) -> None:
    response = await real.client.post(
        "/v1/classify" + query, content=b"x", headers={"Content-Type": "image/png"}
    )
    assert response.status_code == 422
    assert response.json() == error("invalid_parameter", message)


async def test_422_json_without_image(real: Served) -> None:
    response = await real.client.post("/v1/classify", json={"picture": "abc"})
    assert response.status_code == 422
    assert response.json() == error("invalid_parameter", "invalid JSON body: image: Field required")


async def test_422_invalid_base64(real: Served) -> None:
    response = await real.client.post("/v1/classify", json={"image": "not base64!"})
    assert response.status_code == 422
    assert response.json() == error("invalid_parameter", "image is not valid base64")


async def test_422_multipart_without_file_field(real: Served) -> None:
    response = await real.client.post(
        "/v1/classify", files={"image": ("a.png", b"data", "image/png")}
    )
    assert response.status_code == 422
    assert response.json() == error("invalid_parameter", "the multipart body has no field 'file'")


async def test_422_batch_over_max_batch_images(trained_model_dir: Path) -> None:
    settings = Settings(model_dir=trained_model_dir, max_batch_images=2)
    async with serve(settings) as served:
        images = [base64.b64encode(b"x").decode()] * 3
        response = await served.client.post("/v1/classify/batch", json={"images": images})
    assert response.status_code == 422
    assert response.json() == error("invalid_parameter", "the batch holds 3 images; the limit is 2")


async def test_422_empty_batch(real: Served) -> None:
    response = await real.client.post("/v1/classify/batch", json={"images": []})
    assert response.status_code == 422
    assert response.json() == error("invalid_parameter", "the batch holds no images")


# 404, 405


async def test_404_and_405_in_the_same_shape(real: Served) -> None:
    missing = await real.client.get("/v1/nothing")
    assert missing.status_code == 404
    assert missing.json() == error("not_found", "Not Found")
    # Under /v2 (Triton's routes this server lacks, say) in the protocol's shape.
    protocol = await real.client.get("/v2/trace/setting")
    assert protocol.status_code == 404
    assert protocol.json() == {"error": "Not Found"}
    wrong_method = await real.client.get("/v1/classify")
    assert wrong_method.status_code == 405
    assert wrong_method.json() == error("method_not_allowed", "Method Not Allowed")
    assert wrong_method.headers["Allow"] == "POST"


# 503, 504, 500 (forced through a fake classifier)


@pytest.mark.parametrize(
    ("exc", "status", "code", "message", "retry_after"),
    [
        (Overloaded("72 images in flight, the limit is 72", retry_after_s=3), 503, "overloaded",
         "72 images in flight, the limit is 72", "3"),
        (NotReady("the model is not ready (warming_up)", retry_after_s=1), 503, "not_ready",
         "the model is not ready (warming_up)", "1"),
        (DeadlineExceeded("the request timed out"), 504, "deadline_exceeded",
         "the request timed out", None),
        # a 500's own message is for the log: the caller gets a fixed one and the request id
        (InferenceFailed("the runner failed"), 500, "inference_failed",
         "inference failed; see server logs for request req-map", None),
    ],
)  # fmt: skip
async def test_classifier_errors_map_to_status_body_and_headers(
    exc: Exception, status: int, code: str, message: str, retry_after: str | None
) -> None:
    async with serve(Settings(), fake_factory(error=exc)) as served:
        response = await served.client.post(
            "/v1/classify",
            content=b"img",
            headers={"Content-Type": "image/png", "X-Request-ID": "req-map"},
        )
        metrics_text = (await served.client.get("/metrics")).text
    assert response.status_code == status
    assert response.json() == error(code, message)
    assert response.headers.get("Retry-After") == retry_after
    assert f'imgcls_rejections_total{{reason="{code}"}} 1.0' in metrics_text


async def test_batch_refused_as_a_whole_when_every_image_is_unavailable() -> None:
    overloaded = Overloaded("queue full", retry_after_s=2)
    async with serve(Settings(), fake_factory(error=overloaded)) as served:
        response = await served.client.post("/v1/classify/batch", json={"images": ["aW1n", "aW1n"]})
    assert response.status_code == 503
    assert response.json() == error("overloaded", "queue full")
    assert response.headers["Retry-After"] == "2"


async def test_batch_item_500_gets_the_fixed_message_and_request_id() -> None:
    failed = InferenceFailed("ORT: node /conv_1 got shape [2,1,224,224]")
    async with serve(Settings(), fake_factory(error=failed)) as served:
        response = await served.client.post(
            "/v1/classify/batch",
            json={"images": ["aW1n", "aW1n"]},
            headers={"X-Request-ID": "req-batch"},
        )
        metrics_text = (await served.client.get("/metrics")).text
    assert response.status_code == 200  # each image fails alone, as a 500 item
    item_error = error(
        "inference_failed", "inference failed; see server logs for request req-batch"
    )
    assert response.json()["results"] == [
        {"index": 0, "status": 500, **item_error},
        {"index": 1, "status": 500, **item_error},
    ]
    assert "conv_1" not in response.text
    assert 'imgcls_rejections_total{reason="inference_failed"} 2.0' in metrics_text


async def test_500_unexpected_exception_is_logged_never_shown(
    caplog: pytest.LogCaptureFixture,
) -> None:
    boom = RuntimeError("secret internals /etc/passwd")
    async with serve(Settings(), fake_factory(error=boom)) as served:
        with caplog.at_level(logging.ERROR, logger="service.http.middleware"):
            response = await served.client.post(
                "/v1/classify",
                content=b"img",
                headers={"Content-Type": "image/png", "X-Request-ID": "req-500"},
            )
    assert response.status_code == 500
    assert response.json() == error(
        "internal", "internal error; see server logs for request req-500"
    )
    assert "secret" not in response.text
    assert "Traceback" not in response.text
    assert response.headers["X-Request-ID"] == "req-500"
    record = next(r for r in caplog.records if r.name == "service.http.middleware")
    assert record.exc_info is not None
    assert record.exc_info[1] is boom


class BrokenInference(Classifier):
    """The real classifier on a real ONNX Runtime session, whose every batch makes ORT itself
    raise: the batch reaches the session with one channel where the model takes three."""

    def _batcher(self, runner: Runner) -> MicroBatcher[Pixels, Logits]:
        real_run = runner.run

        def run(batch: Batch, alone: bool = True) -> Logits:
            return real_run(batch[..., :1], alone)

        runner.run = run  # type: ignore[method-assign]
        return super()._batcher(runner)


async def test_500_inference_error_text_is_logged_once_never_shown(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model_dir = write_tiny_artifacts(tmp_path / "tiny")
    settings = Settings(
        model_dir=model_dir, provider="cpu", intra_op_threads=1, decode_workers=1, max_batch_size=1
    )
    async with serve(settings, BrokenInference) as served:
        with caplog.at_level(logging.INFO):
            response = await served.client.post(
                "/v1/classify",
                content=colour_png(7),
                headers={"Content-Type": "image/png", "X-Request-ID": "req-ort"},
            )
    assert response.status_code == 500
    assert response.json() == error(
        "inference_failed", "inference failed; see server logs for request req-ort"
    )
    assert response.headers["X-Request-ID"] == "req-ort"
    # The detail (type, message, traceback) is logged once, naming the request...
    [record] = [r for r in caplog.records if r.exc_info]
    assert record.name == "service.inference.batcher"
    assert record.getMessage() == "batch of 1 failed; requests: req-ort"
    assert record.exc_info is not None
    ort_error = record.exc_info[1]
    ort_text = str(ort_error)
    assert "ONNXRuntimeError" in ort_text
    assert ort_text in caplog.text
    assert type(ort_error).__name__ in caplog.text
    assert "Traceback" in caplog.text
    # ...and none of it reaches the caller.
    for leak in (ort_text, "ONNXRuntimeError", type(ort_error).__name__, "Traceback"):
        assert leak not in response.text


@pytest.mark.parametrize("route", ["/v1/classify", "/v1/classify/batch", "/v2/models/fake/infer"])
async def test_overload_is_refused_before_the_body_is_read(route: str) -> None:
    """Under overload a refusal must cost no upload read: the 503 comes back while the body has
    not been pulled at all (the generator below counts what the server consumed)."""
    settings = Settings(queue_capacity=1)
    async with serve(settings, fake_factory(hold=True)) as served:
        held = asyncio.create_task(
            served.client.post(
                "/v1/classify", content=b"img", headers={"Content-Type": "image/png"}
            )
        )
        await served.classifier.wait_admitted(1)
        pulled = 0

        async def body() -> AsyncIterator[bytes]:
            nonlocal pulled
            for _ in range(8):
                pulled += 1
                yield b"x" * 65536

        refused = await served.client.post(
            route, content=body(), headers={"Content-Type": "image/png"}
        )
        served.classifier.release.set()
        assert (await held).status_code == 200
    assert refused.status_code == 503
    assert refused.headers["Retry-After"] == "1"
    assert pulled <= 1  # the transport may buffer the first chunk; the server read none
