"""/v2 over REST in-process (httpx.ASGITransport) on the real model: the JSON and binary
tensor codecs both ways, the classification extension against /v1's answers, metadata,
health, and every malformed request answered with the protocol's 4xx {"error": "..."}."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np
import pytest

from tests.api.conftest import Served
from tests.v2.wire import (
    INFER,
    INPUT,
    MODEL,
    binary_body,
    classification,
    images_input,
    pixels,
    split_response,
)

pytestmark = pytest.mark.anyio


def rejections(served: Served, reason: str) -> float:
    value = served.metrics.registry.get_sample_value("imgcls_rejections_total", {"reason": reason})
    return value or 0.0


def asserted(photos: dict[str, Any]) -> list[str]:
    return sorted(name for name, entry in photos.items() if entry["assert"])


async def v1_top5(served: Served, data: bytes) -> list[tuple[int, float]]:
    response = await served.client.post(
        "/v1/classify", content=data, headers={"Content-Type": "application/octet-stream"}
    )
    assert response.status_code == 200, response.text
    return [(p["class_index"], p["score"]) for p in response.json()["predictions"]]


def assert_same_top5(v2: list[tuple[float, int, str]], v1: list[tuple[int, float]]) -> None:
    assert [index for _, index, _ in v2] == [index for index, _ in v1]
    np.testing.assert_allclose([s for s, _, _ in v2], [s for _, s in v1], rtol=0, atol=1e-4)


async def test_server_metadata_and_health(real: Served) -> None:
    response = await real.client.get("/v2")
    assert response.status_code == 200
    body = response.json()
    assert body["name"] == "imgcls"
    assert set(body["extensions"]) == {"binary_tensor_data", "classification"}
    assert (await real.client.get("/v2/health/live")).json() == {"live": True}
    ready = await real.client.get("/v2/health/ready")
    assert (ready.status_code, ready.json()["ready"]) == (200, True)


async def test_model_metadata_lists_the_tensors_and_the_model_extras(real: Served) -> None:
    version = real.classifier.meta.version
    for path in (f"/v2/models/{MODEL}", f"/v2/models/{MODEL}/versions/{version}"):
        response = await real.client.get(path)
        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["name"], body["versions"]) == (MODEL, [version])
        assert body["inputs"] == [{"name": INPUT, "datatype": "UINT8", "shape": [-1, 224, 224, 3]}]
        assert body["outputs"] == [
            {"name": "logits", "datatype": "FP32", "shape": [-1, 1000]},
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, 1000]},
        ]
        extras = body["parameters"]
        assert extras["untrained"] is False
        assert extras["input_datatypes"] == ["UINT8", "BYTES"]
        assert extras["quantization"]["format"] == "QDQ"
        assert extras["evaluation"]["int8"]["top1"] > 50
        assert extras["provider"].endswith("ExecutionProvider")


async def test_model_readiness_and_unknown_models_or_versions(real: Served) -> None:
    version = real.classifier.meta.version
    for path in (f"/v2/models/{MODEL}/ready", f"/v2/models/{MODEL}/versions/{version}/ready"):
        response = await real.client.get(path)
        assert (response.status_code, response.json()["ready"]) == (200, True)
    for path in (
        "/v2/models/resnet50",
        "/v2/models/resnet50/ready",
        f"/v2/models/{MODEL}/versions/999",
        f"/v2/models/{MODEL}/versions/999/ready",
    ):
        response = await real.client.get(path)
        assert response.status_code == 404, path
        assert set(response.json()) == {"error"}
        assert "unknown" in response.json()["error"]


async def test_encoded_images_as_json_with_classification_answer_as_v1_does(
    real: Served, photos: dict[str, Any], photo_bytes: Callable[[str], bytes]
) -> None:
    names = asserted(photos)
    request = {
        "id": "my-request",
        "inputs": [images_input([photo_bytes(name) for name in names])],
        "outputs": [{"name": "probabilities", "parameters": {"classification": 5}}],
    }
    response = await real.client.post(INFER, json=request)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert (body["model_name"], body["id"]) == (MODEL, "my-request")
    (output,) = body["outputs"]
    assert (output["datatype"], output["shape"]) == ("BYTES", [len(names), 5])
    for i, name in enumerate(names):
        top5 = classification(output["data"][i * 5 : (i + 1) * 5])
        assert top5[0][1] in photos[name]["accept"], (name, top5[0])
        assert_same_top5(top5, await v1_top5(real, photo_bytes(name)))


async def test_pixels_as_binary_in_and_out_give_the_logits_of_the_encoded_image(
    real: Served, photo_bytes: Callable[[str], bytes]
) -> None:
    names = ["chelsea.png", "coffee.png"]
    batch = np.stack([pixels(photo_bytes(name)) for name in names])
    header = {
        "inputs": [
            {
                "name": INPUT,
                "datatype": "UINT8",
                "shape": list(batch.shape),
                "parameters": {"binary_data_size": batch.nbytes},
            }
        ],
        "outputs": [{"name": "logits", "parameters": {"binary_data": True}}],
    }
    body, headers = binary_body(header, [batch.tobytes()])
    response = await real.client.post(INFER, content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/octet-stream"
    answer, blob = split_response(response.content, response.headers[headers_key()])
    (output,) = answer["outputs"]
    assert output["parameters"] == {"binary_data_size": len(names) * 1000 * 4}
    assert "data" not in output
    logits = np.frombuffer(blob, dtype="<f4").reshape(output["shape"])

    encoded = {"inputs": [images_input([photo_bytes(n) for n in names])]}
    encoded["outputs"] = [{"name": "logits"}]
    reference = (await real.client.post(INFER, json=encoded)).json()["outputs"][0]
    expected = np.asarray(reference["data"], dtype=np.float32).reshape(reference["shape"])
    np.testing.assert_allclose(logits, expected, rtol=0, atol=1e-3)


def headers_key() -> str:
    return "inference-header-content-length"


async def test_pixels_as_nested_json_and_every_output_by_default(
    real: Served, photo_bytes: Callable[[str], bytes]
) -> None:
    image = pixels(photo_bytes("chelsea.png"))
    request = {
        "inputs": [
            {
                "name": INPUT,
                "datatype": "UINT8",
                "shape": [1, 224, 224, 3],
                "data": [image.tolist()],
            }
        ]
    }
    response = await real.client.post(f"/v2/models/{MODEL}/infer", json=request)
    assert response.status_code == 200, response.text
    outputs = {o["name"]: o for o in response.json()["outputs"]}
    assert set(outputs) == {"logits", "probabilities"}
    probabilities = np.asarray(outputs["probabilities"]["data"])
    assert probabilities.shape == (1000,)
    assert abs(probabilities.sum() - 1) < 1e-4
    top1 = int(np.argmax(probabilities))
    assert_same_top5(
        [(float(probabilities[top1]), top1, "")],
        (await v1_top5(real, photo_bytes("chelsea.png")))[:1],
    )


async def test_binary_output_for_all_and_classification_strings_in_binary(
    real: Served, photo_bytes: Callable[[str], bytes]
) -> None:
    request = {
        "parameters": {"binary_data_output": True},
        "inputs": [images_input([photo_bytes("coffee.png")])],
        "outputs": [
            {"name": "probabilities", "parameters": {"classification": 3}},
            {"name": "logits", "parameters": {"binary_data": False}},
        ],
    }
    response = await real.client.post(INFER, json=request)
    assert response.status_code == 200, response.text
    answer, blob = split_response(response.content, response.headers[headers_key()])
    classes, logits = answer["outputs"]
    assert "data" in logits
    assert len(logits["data"]) == 1000
    assert classes["parameters"]["binary_data_size"] == len(blob)
    strings = []
    offset = 0
    while offset < len(blob):
        length = int.from_bytes(blob[offset : offset + 4], "little")
        strings.append(blob[offset + 4 : offset + 4 + length].decode())
        offset += 4 + length
    assert len(strings) == 3
    assert classification(strings)[0][2] == "espresso"


async def test_server_timing_and_request_id(
    real: Served, photo_bytes: Callable[[str], bytes]
) -> None:
    request = {"inputs": [images_input([photo_bytes("coffee.png")] * 2)]}
    response = await real.client.post(INFER, json=request, headers={"X-Request-ID": "v2-abc"})
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "v2-abc"
    timing = response.headers["server-timing"]
    assert all(part in timing for part in ("decode;dur=", "queue;dur=", "inference;dur="))


def uint8(shape: list[int], **parameters: Any) -> dict[str, Any]:
    return {"name": INPUT, "datatype": "UINT8", "shape": shape, "parameters": parameters}


def json_case(request: Any, path: str = INFER) -> tuple[str, bytes, dict[str, str]]:
    return path, json.dumps(request).encode(), {}


def binary_case(header: dict[str, Any], blob: bytes) -> tuple[str, bytes, dict[str, str]]:
    body, headers = binary_body(header, [blob])
    return INFER, body, headers


ONE = 224 * 224 * 3
BAD: dict[str, tuple[tuple[str, bytes, dict[str, str]], int, str, str]] = {
    "wrong shape": (
        binary_case({"inputs": [uint8([1, 224, 224], binary_data_size=224 * 224)]}, bytes(50176)),
        400,
        "invalid_parameter",
        "shape must be [N, 224, 224, 3]",
    ),
    "wrong datatype": (
        json_case({"inputs": [{"name": INPUT, "datatype": "FP32", "shape": [1], "data": [1.0]}]}),
        400,
        "invalid_parameter",
        "datatype FP32 is not accepted",
    ),
    "binary size mismatch": (
        binary_case({"inputs": [uint8([1, 224, 224, 3], binary_data_size=ONE)]}, bytes(ONE - 1)),
        400,
        "invalid_parameter",
        "runs past",
    ),
    "bytes after the inputs' data": (
        binary_case({"inputs": [uint8([1, 224, 224, 3], binary_data_size=ONE)]}, bytes(ONE + 1)),
        400,
        "invalid_parameter",
        "add up to",
    ),
    "unknown model": (
        json_case({"inputs": [images_input([b"x"])]}, "/v2/models/resnet50/infer"),
        404,
        "model_not_found",
        "unknown model",
    ),
    "unknown version": (
        json_case({"inputs": [images_input([b"x"])]}, f"/v2/models/{MODEL}/versions/7/infer"),
        404,
        "model_not_found",
        "unknown version",
    ),
    "too many images": (
        json_case({"inputs": [images_input([b"x"] * 33)]}),
        400,
        "invalid_parameter",
        "33 images; send 1 to 32",
    ),
    "bad base64": (
        json_case({"inputs": [{"name": INPUT, "datatype": "BYTES", "shape": [1], "data": ["%%"]}]}),
        400,
        "invalid_parameter",
        "not valid base64",
    ),
    "not an image": (
        json_case({"inputs": [images_input([b"hello"])]}),
        400,
        "bad_image",
        "not a decodable image",
    ),
    "pixel out of range": (
        json_case({"inputs": [{**uint8([1, 224, 224, 3]), "data": [0] * (ONE - 1) + [256]}]}),
        400,
        "invalid_parameter",
        "UINT8 integer",
    ),
    "unknown output": (
        json_case({"inputs": [images_input([b"x"])], "outputs": [{"name": "softmax"}]}),
        400,
        "invalid_parameter",
        "unknown output",
    ),
    "unknown input": (
        json_case({"inputs": [{**images_input([b"x"]), "name": "input_1"}]}),
        400,
        "invalid_parameter",
        "expected one input named 'image'",
    ),
    "no data": (
        json_case({"inputs": [uint8([1, 224, 224, 3])]}),
        400,
        "invalid_parameter",
        "neither data nor binary_data_size",
    ),
    "not JSON": (
        (INFER, b"{not json", {}),
        400,
        "invalid_parameter",
        "invalid inference request",
    ),
    "header length past the body": (
        (INFER, b"{}", {"Inference-Header-Content-Length": "99"}),
        400,
        "invalid_parameter",
        "Inference-Header-Content-Length",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
async def test_malformed_requests_get_the_protocols_4xx(real: Served, case: str) -> None:
    (path, body, headers), status, reason, message = BAD[case]
    before = rejections(real, reason)
    response = await real.client.post(path, content=body, headers=headers)
    assert response.status_code == status, response.text
    assert set(response.json()) == {"error"}
    assert message in response.json()["error"]
    assert rejections(real, reason) == before + 1


async def test_a_timeout_parameter_in_microseconds_bounds_the_request(
    real: Served, photo_bytes: Callable[[str], bytes]
) -> None:
    request = {"parameters": {"timeout": 1}, "inputs": [images_input([photo_bytes("coffee.png")])]}
    response = await real.client.post(INFER, json=request)
    assert response.status_code == 504, response.text
    assert "timed out" in response.json()["error"]


async def test_v1_errors_keep_their_own_shape(real: Served) -> None:
    response = await real.client.post("/v1/classify", content=b"x", headers={"Content-Type": "a/b"})
    assert set(response.json()["error"]) == {"code", "message"}


async def test_a_json_body_has_its_own_cap_checked_before_it_is_read(real: Served) -> None:
    """IMGCLS_MAX_JSON_REQUEST_BYTES (24 MiB): from Content-Length, from the binary extension's
    header length, or at the first chunk over it; binary data may still be larger."""
    cap = 24 * 1024 * 1024
    over = await real.client.post(INFER, content=b" " * (cap + 1))
    header_over = await real.client.post(
        INFER, content=b"{}", headers={"Inference-Header-Content-Length": str(cap + 1)}
    )

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(25):
            yield b" " * (1024 * 1024)

    chunked = await real.client.post(INFER, content=chunks())
    for response in (over, header_over):
        assert response.status_code == 413, response.text
        assert "send large tensors as binary data" in response.json()["error"]
    assert chunked.status_code == 413, chunked.text
    assert f"exceeds the limit of {cap} bytes" in chunked.json()["error"]


async def test_a_header_length_in_digits_that_are_not_ascii_is_a_400(real: Served) -> None:
    """str.isdigit() accepts "\u00b2", which int() then refuses: it was a 500."""
    headers = {"Inference-Header-Content-Length": "\u00b2".encode("latin-1")}
    response = await real.client.post(INFER, content=b"{}", headers=headers)
    assert response.status_code == 400, response.text
    assert "Inference-Header-Content-Length must be a byte count" in response.json()["error"]
