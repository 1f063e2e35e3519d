"""The Open Inference Protocol v2, proven with clients nobody here wrote: Triton's own
tritonclient.http and tritonclient.grpc (PyPI) against a running ``python -m service`` with
gRPC on. Every answer is checked against /v1's for the same photos; every malformed request
must get the protocol's 4xx (REST) or its status code (gRPC), never a server error."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from service.inference.postprocess import softmax
from tests.e2e.conftest import ServiceProcess, free_port, run_service
from tests.v2.wire import INPUT, MODEL, binary_body, classification, pixels

pytestmark = pytest.mark.slow

MAX_IMAGES = 8
TRANSPORTS = ["http", "grpc"]


class Server:
    def __init__(self, process: ServiceProcess, grpc_port: int) -> None:
        self.process = process
        self.http_url = process.url.removeprefix("http://")
        self.grpc_url = f"127.0.0.1:{grpc_port}"

    def metadata(self, transport: str, *args: str) -> Any:
        """Server metadata, or a model's with a name: a dict from both clients."""
        client = self.client(transport)
        kwargs = {"as_json": True} if transport == "grpc" else {}
        if args:
            return client.get_model_metadata(*args, **kwargs)
        return client.get_server_metadata(**kwargs)

    def client(self, transport: str) -> Any:
        if transport == "http":
            return httpclient.InferenceServerClient(self.http_url)
        return grpcclient.InferenceServerClient(self.grpc_url)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, trained_model_dir: Path) -> Iterator[Server]:
    port = free_port()
    env = {"IMGCLS_GRPC_PORT": str(port), "IMGCLS_MAX_BATCH_IMAGES": str(MAX_IMAGES)}
    with run_service(tmp_path_factory.mktemp("v2"), trained_model_dir, **env) as process:
        yield Server(process, port)


@pytest.fixture(scope="module")
def names(photos: dict[str, Any]) -> list[str]:
    return sorted(name for name, entry in photos.items() if entry["assert"])[:MAX_IMAGES]


def v1_top5(server: Server, data: bytes) -> list[tuple[int, float]]:
    response = httpx.post(
        f"{server.process.url}/v1/classify",
        content=data,
        headers={"Content-Type": "application/octet-stream"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return [(p["class_index"], p["score"]) for p in response.json()["predictions"]]


def module(transport: str) -> Any:
    return httpclient if transport == "http" else grpcclient


def tensor(transport: str, array: Any, datatype: str, binary: bool = True) -> Any:
    item = module(transport).InferInput(INPUT, list(array.shape), datatype)
    if transport == "http":
        item.set_data_from_numpy(array, binary_data=binary)
    else:
        item.set_data_from_numpy(array)
    return item


def wanted(transport: str, name: str, class_count: int = 0, binary: bool = True) -> Any:
    if transport == "http":
        return httpclient.InferRequestedOutput(name, binary_data=binary, class_count=class_count)
    return grpcclient.InferRequestedOutput(name, class_count=class_count)


def images(transport: str, encoded: list[bytes], binary: bool) -> Any:
    if binary:
        return tensor(transport, np.array(encoded, dtype=np.object_), "BYTES")
    # JSON BYTES elements are base64 strings: an image is not text.
    text = [base64.b64encode(data) for data in encoded]
    return tensor(transport, np.array(text, dtype=np.object_), "BYTES", binary=False)


def assert_same_top5(v2: list[tuple[float, int, str]], v1: list[tuple[int, float]]) -> None:
    assert [index for _, index, _ in v2] == [index for index, _ in v1]
    np.testing.assert_allclose([s for s, _, _ in v2], [s for _, s in v1], rtol=0, atol=1e-4)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_liveness_and_readiness(server: Server, transport: str) -> None:
    client = server.client(transport)
    version = server.metadata(transport, MODEL)["versions"][0]
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready(MODEL)
    assert client.is_model_ready(MODEL, version)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_server_and_model_metadata(server: Server, transport: str) -> None:
    found = server.metadata(transport)
    assert found["name"] == "imgcls"
    assert set(found["extensions"]) == {"binary_tensor_data", "classification", "model_repository"}
    meta = server.metadata(transport, MODEL)
    assert meta["name"] == MODEL
    assert meta["platform"] == "onnxruntime_onnx"
    (image,) = meta["inputs"]
    # protobuf's JSON renders int64 as strings
    assert (image["name"], image["datatype"]) == (INPUT, "UINT8")
    assert [int(d) for d in image["shape"]] == [-1, 224, 224, 3]
    outputs = {o["name"]: [int(d) for d in o["shape"]] for o in meta["outputs"]}
    assert outputs == {"logits": [-1, 1000], "probabilities": [-1, 1000]}
    if transport == "http":  # gRPC's ModelMetadataResponse has no parameters field
        assert meta["parameters"]["untrained"] is False


@pytest.mark.parametrize(("transport", "binary"), [("http", True), ("http", False), ("grpc", True)])
def test_encoded_images_with_the_classification_extension_answer_as_v1(
    server: Server,
    names: list[str],
    photos: dict[str, Any],
    photo_bytes: Callable[[str], bytes],
    transport: str,
    binary: bool,
) -> None:
    encoded = [photo_bytes(name) for name in names]
    result = server.client(transport).infer(
        MODEL,
        [images(transport, encoded, binary)],
        outputs=[wanted(transport, "probabilities", class_count=5, binary=binary)],
        request_id="triton-1",
    )
    rows = result.as_numpy("probabilities")
    assert rows.shape == (len(names), 5)
    for name, data, row in zip(names, encoded, rows, strict=True):
        # binary answers come back as bytes, JSON ones as str
        top5 = classification([i.decode() if isinstance(i, bytes) else i for i in row])
        assert top5[0][1] in photos[name]["accept"], (name, top5[0])
        assert_same_top5(top5, v1_top5(server, data))


@pytest.mark.parametrize(("transport", "binary"), [("http", True), ("http", False), ("grpc", True)])
def test_pixels_skip_decoding_and_their_logits_answer_as_v1(
    server: Server,
    names: list[str],
    photo_bytes: Callable[[str], bytes],
    transport: str,
    binary: bool,
) -> None:
    batch = np.stack([pixels(photo_bytes(name)) for name in names[:4]])
    result = server.client(transport).infer(
        MODEL,
        [tensor(transport, batch, "UINT8", binary)],
        outputs=[wanted(transport, "logits", binary=binary)],
    )
    logits = result.as_numpy("logits")
    assert (logits.shape, logits.dtype) == ((len(batch), 1000), np.float32)
    for name, row in zip(names, softmax(logits), strict=False):
        order = np.argsort(-row, kind="stable")[:5]
        assert_same_top5(
            [(float(row[i]), int(i), "") for i in order], v1_top5(server, photo_bytes(name))
        )


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_every_output_when_none_is_named(
    server: Server, photo_bytes: Callable[[str], bytes], transport: str
) -> None:
    batch = pixels(photo_bytes("coffee.png"))[np.newaxis]
    result = server.client(transport).infer(MODEL, [tensor(transport, batch, "UINT8")])
    probabilities = result.as_numpy("probabilities")
    np.testing.assert_allclose(probabilities, softmax(result.as_numpy("logits")), atol=1e-6)


# Bad inputs: (inputs, model, version) as tritonclient sends them; each a 4xx / its gRPC code.
def bad_inputs(transport: str, case: str, photo: bytes) -> tuple[list[Any], str, str]:
    one = np.zeros((1, 224, 224, 3), np.uint8)
    if case == "wrong shape":
        return [tensor(transport, np.zeros((1, 224, 224), np.uint8), "UINT8")], MODEL, ""
    if case == "wrong datatype":
        return [tensor(transport, one.astype(np.float32), "FP32")], MODEL, ""
    if case == "unknown model":
        return [tensor(transport, one, "UINT8")], "resnet50", ""
    if case == "unknown version":
        return [tensor(transport, one, "UINT8")], MODEL, "999"
    if case == "too many images":
        return [images(transport, [photo] * (MAX_IMAGES + 1), binary=True)], MODEL, ""
    if case == "not an image":
        return [images(transport, [b"GIF89a but not really"], binary=True)], MODEL, ""
    raise AssertionError(case)


BAD = {
    "wrong shape": (400, "INVALID_ARGUMENT"),
    "wrong datatype": (400, "INVALID_ARGUMENT"),
    "unknown model": (404, "NOT_FOUND"),
    "unknown version": (404, "NOT_FOUND"),
    "too many images": (400, "INVALID_ARGUMENT"),
    "not an image": (400, "INVALID_ARGUMENT"),
}


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_inputs_get_the_protocols_error(
    server: Server, photo_bytes: Callable[[str], bytes], transport: str, case: str
) -> None:
    inputs, model, version = bad_inputs(transport, case, photo_bytes("coffee.png"))
    with pytest.raises(InferenceServerException) as raised:
        server.client(transport).infer(model, inputs, model_version=version)
    status, code = BAD[case]
    assert raised.value.status() == (str(status) if transport == "http" else f"StatusCode.{code}")
    assert raised.value.message()


def test_bad_base64_in_json_bytes_is_a_400(server: Server) -> None:
    client = server.client("http")
    item = httpclient.InferInput(INPUT, [1], "BYTES")
    item.set_data_from_numpy(np.array([b"not base64!"], dtype=np.object_), binary_data=False)
    with pytest.raises(InferenceServerException) as raised:
        client.infer(MODEL, [item])
    assert raised.value.status() == "400"
    assert "not valid base64" in raised.value.message()


def test_binary_size_mismatch_over_rest_is_a_400(server: Server) -> None:
    size = 224 * 224 * 3
    header = {
        "inputs": [
            {
                "name": INPUT,
                "datatype": "UINT8",
                "shape": [1, 224, 224, 3],
                "parameters": {"binary_data_size": size},
            }
        ]
    }
    body, headers = binary_body(header, [bytes(size - 10)])
    url = f"{server.process.url}/v2/models/{MODEL}/infer"
    response = httpx.post(url, content=body, headers=headers, timeout=30)
    assert response.status_code == 400
    assert "binary_data_size" in response.json()["error"]


def grpc_stub(server: Server) -> Any:
    return service_pb2_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(server.grpc_url))


def test_binary_size_mismatch_over_grpc_is_invalid_argument(server: Server) -> None:
    request = service_pb2.ModelInferRequest(model_name=MODEL)
    item = request.inputs.add(name=INPUT, datatype="UINT8", shape=[1, 224, 224, 3])
    assert item.name == INPUT
    request.raw_input_contents.append(bytes(224 * 224 * 3 - 10))
    with pytest.raises(grpc.RpcError) as raised:
        grpc_stub(server).ModelInfer(request, timeout=30)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "takes 150528" in raised.value.details()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_timeout_parameter_is_honoured(
    server: Server, photo_bytes: Callable[[str], bytes], transport: str
) -> None:
    inputs = [images(transport, [photo_bytes("coffee.png")], binary=True)]
    with pytest.raises(InferenceServerException) as raised:
        server.client(transport).infer(MODEL, inputs, timeout=1)  # microseconds
    expected = "504" if transport == "http" else "StatusCode.DEADLINE_EXCEEDED"
    assert raised.value.status() == expected


def test_triton_only_methods_are_unimplemented(server: Server) -> None:
    with pytest.raises(InferenceServerException) as raised:
        server.client("grpc").get_model_config(MODEL)
    assert raised.value.status() == "StatusCode.UNIMPLEMENTED"


def test_grpc_rejections_are_counted_with_rest_ones(server: Server) -> None:
    metrics = httpx.get(f"{server.process.url}/metrics", timeout=10).text
    assert 'imgcls_rejections_total{reason="model_not_found"}' in metrics
    assert 'status="500"' not in metrics
