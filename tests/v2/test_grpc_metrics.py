"""gRPC calls are counted like HTTP requests: /metrics shows imgcls_grpc_requests_total by method
and status code, and imgcls_grpc_request_duration_seconds by method, for answered calls and for
refused ones (whose reason is also in imgcls_rejections_total, as for REST)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from tritonclient.grpc import service_pb2, service_pb2_grpc

from service.http.state import service_state
from service.settings import Settings
from tests.api.conftest import Served, serve
from tests.v2.wire import INPUT, MODEL

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
async def served(trained_model_dir: Path) -> AsyncIterator[tuple[Served, Any]]:
    settings = Settings(model_dir=trained_model_dir, host="127.0.0.1", grpc_port=0)
    async with serve(settings) as served:
        port = service_state(served.app).grpc_port
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield served, service_pb2_grpc.GRPCInferenceServiceStub(channel)


def sample(text: str, name: str, **labels: str) -> float:
    """One sample's value from the exposition text (0 when absent)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        found = re.fullmatch(rf"{name}\{{(.*)\}} (\S+)", line)
        if found and ",".join(sorted(found.group(1).split(","))) == wanted:
            return float(found.group(2))
    return 0.0


async def test_grpc_calls_are_counted_by_method_and_code(
    served: tuple[Served, Any], photo_bytes: Callable[[str], bytes]
) -> None:
    app, stub = served
    before = (await app.client.get("/metrics")).text
    image = photo_bytes("coffee.png")
    request = service_pb2.ModelInferRequest(model_name=MODEL)
    request.inputs.add(name=INPUT, datatype="BYTES", shape=[1])
    request.raw_input_contents.append(len(image).to_bytes(4, "little") + image)
    answer = await stub.ModelInfer(request, timeout=60)
    assert answer.outputs
    await stub.ServerLive(service_pb2.ServerLiveRequest())
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await stub.ModelMetadata(service_pb2.ModelMetadataRequest(name="no_such_model"))
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    bad = service_pb2.ModelInferRequest(model_name=MODEL)
    bad.inputs.add(name=INPUT, datatype="FP32", shape=[1, 224, 224, 3])
    bad.raw_input_contents.append(b"\0" * 12)
    with pytest.raises(grpc.aio.AioRpcError) as invalid:
        await stub.ModelInfer(bad, timeout=60)
    assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as triton_only:
        await stub.ModelConfig(service_pb2.ModelConfigRequest(name=MODEL))
    assert triton_only.value.code() == grpc.StatusCode.UNIMPLEMENTED

    after = (await app.client.get("/metrics")).text

    def grew(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    calls = "imgcls_grpc_requests_total"
    assert grew(calls, method="ModelInfer", code="OK") == 1
    assert grew(calls, method="ServerLive", code="OK") == 1
    assert grew(calls, method="ModelMetadata", code="NOT_FOUND") == 1
    assert grew(calls, method="ModelInfer", code="INVALID_ARGUMENT") == 1
    assert grew(calls, method="ModelConfig", code="UNIMPLEMENTED") == 1
    seconds = "imgcls_grpc_request_duration_seconds"
    assert grew(f"{seconds}_count", method="ModelInfer") == 2
    assert grew(f"{seconds}_sum", method="ModelInfer") > 0
    # Refusals are counted by reason too, in the metric REST's share.
    assert grew("imgcls_rejections_total", reason="model_not_found") == 1
    assert grew("imgcls_rejections_total", reason="invalid_parameter") == 1
    # gRPC is not counted as HTTP.
    assert "GRPCInferenceService" not in after


async def test_a_message_that_does_not_fit_the_body_budget_is_refused(
    served: tuple[Served, Any], photo_bytes: Callable[[str], bytes]
) -> None:
    """gRPC messages count in the same budget as REST bodies (service/limits/body_budget.py): while
    other
    requests hold all but 1000 bytes of it, an image is refused RESOURCE_EXHAUSTED (as any
    overload) and counted as overloaded; once they are done, the same call is answered."""
    app, stub = served
    request = service_pb2.ModelInferRequest(model_name=MODEL)
    request.inputs.add(name=INPUT, datatype="BYTES", shape=[1])
    image = photo_bytes("coffee.png")
    request.raw_input_contents.append(len(image).to_bytes(4, "little") + image)
    budget = service_state(app.app).body_budget
    others = budget.hold()
    others.take(budget.capacity - 1000)
    before = (await app.client.get("/metrics")).text
    try:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.ModelInfer(request, timeout=60)
    finally:
        others.release()
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert refused.value.details() == (
        f"request bodies held in memory are at their budget ({budget.capacity - 1000} of "
        f"{budget.capacity} bytes); this one needs {request.ByteSize()}"
    )
    after = (await app.client.get("/metrics")).text
    rejected = sample(after, "imgcls_rejections_total", reason="overloaded")
    assert rejected == sample(before, "imgcls_rejections_total", reason="overloaded") + 1
    assert (await stub.ModelInfer(request, timeout=60)).outputs
    assert budget.in_use == 0
