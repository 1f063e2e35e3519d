"""The model repository extension over REST and the versioned routes, on the in-process app
with the real Classifier and tiny models in numbered version folders."""

from __future__ import annotations

import base64
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

from service.http.state import service_state
from service.settings import Settings
from tests.api.conftest import Served, serve
from tests.unit.tiny import colour_png
from tests.versions_repo import tamper, tiny_version

pytestmark = pytest.mark.anyio

PNG = colour_png(123)
TOKEN = "s3cret-token-for-tests"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    tiny_version(tmp_path, "1")
    tiny_version(tmp_path, "2", permute=True)
    return tmp_path


def settings(root: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "model_dir": root,
        "provider": "cpu",
        "intra_op_threads": 1,
        "decode_workers": 1,
        "max_batch_size": 2,
    }
    return Settings(**(values | overrides))


@pytest.fixture
async def app(root: Path) -> AsyncIterator[Served]:
    async with serve(settings(root)) as served:
        yield served


def infer_body() -> dict[str, Any]:
    image = base64.b64encode(PNG).decode()
    return {
        "inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": [image]}],
        "outputs": [{"name": "probabilities", "parameters": {"classification": 1}}],
    }


async def infer(client: httpx.AsyncClient, path: str) -> httpx.Response:
    return await client.post(path, json=infer_body())


async def test_the_index_lists_every_version_on_disk_with_its_state(app: Served) -> None:
    response = await app.client.post("/v2/repository/index")
    assert response.status_code == 200
    assert response.json() == [
        {"name": "tiny", "version": "2", "state": "READY", "reason": ""},
        {"name": "tiny", "version": "1", "state": "UNAVAILABLE", "reason": "not loaded"},
    ]
    ready = await app.client.post("/v2/repository/index", json={"ready": True})
    assert [e["version"] for e in ready.json()] == ["2"]


async def test_load_swaps_the_version_every_answer_names(app: Served) -> None:
    client = app.client
    before = await client.post("/v1/classify", content=PNG, headers={"content-type": "image/png"})
    assert before.json()["model_version"] == "2"
    loaded = await client.post(
        "/v2/repository/models/tiny/load", json={"parameters": {"version": "1"}}
    )
    assert loaded.status_code == 200
    assert loaded.json() == {"name": "tiny", "version": "1", "state": "READY"}
    after = await client.post("/v1/classify", content=PNG, headers={"content-type": "image/png"})
    assert after.json()["model_version"] == "1"
    assert after.json()["predictions"][0]["class_index"] == 123  # version 1's model answered
    answer = await infer(client, "/v2/models/tiny/infer")
    assert answer.json()["model_version"] == "1"
    assert answer.json()["outputs"][0]["data"][0].split(":")[1] == "123"
    assert (await client.get("/v1/model")).json()["version"] == "1"


async def test_versioned_routes_answer_for_the_loaded_version_and_404_for_others(
    app: Served,
) -> None:
    client = app.client
    assert (await client.get("/v2/models/tiny/versions/2")).json()["versions"] == ["2"]
    assert (await client.get("/v2/models/tiny/versions/2/ready")).json()["ready"] is True
    assert (await infer(client, "/v2/models/tiny/versions/2/infer")).status_code == 200
    for path in ("/v2/models/tiny/versions/1", "/v2/models/tiny/versions/1/ready"):
        response = await client.get(path)
        assert response.status_code == 404
        assert "unknown version '1'" in response.json()["error"]
    refused = await infer(client, "/v2/models/tiny/versions/1/infer")
    assert refused.status_code == 404
    await client.post("/v2/repository/models/tiny/load", json={"parameters": {"version": 1}})
    assert (await infer(client, "/v2/models/tiny/versions/1/infer")).status_code == 200
    assert (await infer(client, "/v2/models/tiny/versions/2/infer")).status_code == 404


async def test_a_refused_version_is_409_and_visible_in_the_metadata(
    app: Served, root: Path
) -> None:
    tamper(root / "1")
    client = app.client
    refused = await client.post(
        "/v2/repository/models/tiny/load", json={"parameters": {"version": "1"}}
    )
    assert refused.status_code == 409
    assert "version 1 refused" in refused.json()["error"]
    assert "sha256" in refused.json()["error"]
    assert (await infer(client, "/v2/models/tiny/infer")).json()["model_version"] == "2"
    versions = (await client.get("/v2/models/tiny")).json()["parameters"]["versions"]
    assert versions[0] == {"version": "2", "state": "READY", "reason": ""}
    assert versions[1]["state"] == "UNAVAILABLE"
    assert "sha256" in versions[1]["reason"]
    index = (await client.post("/v2/repository/index")).json()
    assert "sha256" in index[1]["reason"]


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        ("/v2/repository/models/tiny/load", {"parameters": {"version": "9"}}, 404, "no version"),
        ("/v2/repository/models/other/load", None, 404, "unknown model 'other'"),
        ("/v2/repository/models/tiny/load", {"parameters": {"config": "{}"}}, 400, "config"),
        ("/v2/repository/models/tiny/load", {"parameters": {"version": True}}, 400, "version"),
        ("/v2/repository/models/tiny/load", {"parameters": []}, 400, "invalid request body"),
        ("/v2/repository/index", {"ready": "yes"}, 400, "invalid request body"),
    ],
)
async def test_bad_repository_requests_get_the_protocol_error_shape(
    app: Served, path: str, body: Any, status: int, message: str
) -> None:
    response = await app.client.post(path, json=body)
    assert response.status_code == status
    assert message in response.json()["error"]
    assert (await infer(app.client, "/v2/models/tiny/infer")).json()["model_version"] == "2"


async def test_unload_then_load_the_newest_again(app: Served) -> None:
    client = app.client
    unloaded = await client.post("/v2/repository/models/tiny/unload")
    assert unloaded.json() == {"name": "tiny", "version": "2", "state": "UNAVAILABLE"}
    assert (await client.get("/v2/health/ready")).status_code == 503
    assert (await client.get("/readyz")).status_code == 503
    refused = await infer(client, "/v2/models/tiny/infer")
    assert refused.status_code == 503
    index = (await client.post("/v2/repository/index")).json()
    assert {e["state"] for e in index} == {"UNAVAILABLE"}
    reloaded = await client.post("/v2/repository/models/tiny/load")
    assert reloaded.json()["version"] == "2"
    assert (await client.get("/v2/health/ready")).status_code == 200


async def test_the_repository_needs_the_bearer_token(root: Path) -> None:
    async with serve(settings(root, api_tokens=TOKEN)) as served:
        for path in ("/v2/repository/index", "/v2/repository/models/tiny/load"):
            assert (await served.client.post(path)).status_code == 401
        auth = {"authorization": f"Bearer {TOKEN}"}
        response = await served.client.post("/v2/repository/index", headers=auth)
        assert response.status_code == 200


async def test_the_repository_over_grpc(root: Path) -> None:
    async with serve(settings(root, host="127.0.0.1", grpc_port=0)) as served:
        port = service_state(served.app).grpc_port
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            index = await stub.RepositoryIndex(pb.RepositoryIndexRequest())
            states = [(m.name, m.version, m.state) for m in index.models]
            assert states == [("tiny", "2", "READY"), ("tiny", "1", "UNAVAILABLE")]
            await stub.RepositoryModelLoad(load_request("1"))
            answer = await stub.ModelInfer(grpc_infer_request())
            assert answer.model_version == "1"
            ready = await stub.ModelReady(pb.ModelReadyRequest(name="tiny", version="1"))
            assert ready.ready
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await stub.ModelReady(pb.ModelReadyRequest(name="tiny", version="2"))
            assert raised.value.code() == grpc.StatusCode.NOT_FOUND
            tamper(root / "2")
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await stub.RepositoryModelLoad(load_request("2"))
            assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "sha256" in (raised.value.details() or "")
            await stub.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name="tiny"))
            assert not (await stub.ServerReady(pb.ServerReadyRequest())).ready


def load_request(version: str) -> Any:
    parameter = pb.ModelRepositoryParameter(string_param=version)
    return pb.RepositoryModelLoadRequest(model_name="tiny", parameters={"version": parameter})


def grpc_infer_request() -> Any:
    tensor = pb.ModelInferRequest.InferInputTensor(name="image", datatype="BYTES", shape=[1])
    return pb.ModelInferRequest(
        model_name="tiny",
        inputs=[tensor],
        raw_input_contents=[struct.pack("<I", len(PNG)) + PNG],
    )
