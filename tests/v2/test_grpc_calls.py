"""The frame every gRPC call runs in (service/grpc/calls.py) and the checks ModelInfer makes of
its request before any tensor data is decoded, through a real grpc.aio server in-process:
method labels come from the service's fixed set, a server failure is INTERNAL with the fixed
message and the request id, and parameters are refused as REST refuses them."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from tritonclient.grpc import service_pb2, service_pb2_grpc

from service.http.state import service_state
from service.limits.lifecycle import Readiness
from service.observability.metrics import Metrics
from service.settings import Settings
from tests.api.conftest import Served, fake_factory, serve
from tests.api.fakes import FakeClassifier
from tests.v2.wire import INPUT, MODEL

pytestmark = pytest.mark.anyio

SERVICE = "/inference.GRPCInferenceService/"


@pytest.fixture(scope="module")
async def served(trained_model_dir: Path) -> AsyncIterator[tuple[Served, Any, grpc.aio.Channel]]:
    settings = Settings(model_dir=trained_model_dir, host="127.0.0.1", grpc_port=0)
    async with serve(settings) as served:
        port = service_state(served.app).grpc_port
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield served, service_pb2_grpc.GRPCInferenceServiceStub(channel), channel


def grpc_series(metrics: str) -> list[str]:
    return [line for line in metrics.splitlines() if line.startswith("imgcls_grpc_")]


async def test_method_names_a_caller_makes_up_add_no_metric_series() -> None:
    """With auth on, a call without a token is refused before its method is looked up: it is
    still labelled from the service's fixed set, so 40 made-up names add no series."""
    settings = Settings(host="127.0.0.1", grpc_port=0, api_tokens="s3cret")
    async with serve(settings, fake_factory()) as app:
        port = service_state(app.app).grpc_port
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:

            async def call(path: str, token: str | None = None) -> grpc.StatusCode:
                metadata = (("authorization", f"Bearer {token}"),) if token else ()
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await channel.unary_unary(path)(b"", timeout=10, metadata=metadata)
                return refused.value.code()

            # The unmatched series exist from here on.
            await call(f"{SERVICE}NoSuchMethod")
            await call(f"{SERVICE}NoSuchMethod", "s3cret")
            before = grpc_series((await app.client.get("/metrics")).text)
            made_up = [f"/{uuid.uuid4().hex}.Svc/{uuid.uuid4().hex}" for _ in range(10)]
            made_up += [f"{SERVICE}{uuid.uuid4().hex}" for _ in range(10)]
            refused = {await call(path) for path in made_up}
            unknown = {await call(path, "s3cret") for path in made_up}
            after = grpc_series((await app.client.get("/metrics")).text)
    assert (refused, unknown) == (
        {grpc.StatusCode.UNAUTHENTICATED},
        {grpc.StatusCode.UNIMPLEMENTED},
    )
    assert [line.rsplit(" ", 1)[0] for line in after] == [line.rsplit(" ", 1)[0] for line in before]
    assert 'imgcls_grpc_requests_total{code="UNAUTHENTICATED",method="unmatched"} 21.0' in after
    assert 'imgcls_grpc_requests_total{code="UNIMPLEMENTED",method="unmatched"} 21.0' in after


def infer_request(**parameters: Any) -> Any:
    request = service_pb2.ModelInferRequest(model_name=MODEL)
    request.inputs.add(name=INPUT, datatype="UINT8", shape=[1, 224, 224, 3])
    request.raw_input_contents.append(bytes(224 * 224 * 3))
    for name, (kind, value) in parameters.items():
        setattr(request.parameters[name], kind, value)
    return request


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"timeout": ("int64_param", 0)}, "parameters.timeout must be a positive int64_param"),
        ({"timeout": ("int64_param", -5)}, "got int64_param -5"),
        ({"timeout": ("bool_param", True)}, "got bool_param True"),
        ({"timeout": ("string_param", "1s")}, "got string_param '1s'"),
    ],
)
async def test_a_timeout_that_is_not_a_positive_count_is_refused_as_over_rest(
    served: tuple[Served, Any, grpc.aio.Channel], parameters: dict[str, Any], message: str
) -> None:
    _, stub, _ = served
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.ModelInfer(infer_request(**parameters), timeout=30)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in str(refused.value.details())


async def test_a_positive_timeout_is_accepted(
    served: tuple[Served, Any, grpc.aio.Channel],
) -> None:
    _, stub, _ = served
    answer = await stub.ModelInfer(infer_request(timeout=("int64_param", 30_000_000)), timeout=30)
    assert [o.name for o in answer.outputs] == ["logits", "probabilities"]


async def test_bytes_elements_beyond_the_shape_stop_the_decoding_at_the_first_extra(
    served: tuple[Served, Any, grpc.aio.Channel],
) -> None:
    """Four zero bytes are an empty element: 8 MB of zeros would be two million of them."""
    _, stub, _ = served
    request = service_pb2.ModelInferRequest(model_name=MODEL)
    request.inputs.add(name=INPUT, datatype="BYTES", shape=[1])
    request.raw_input_contents.append(bytes(8_000_000))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.ModelInfer(request, timeout=30)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.details() == "input 'image': more than 1 BYTES elements"


class BrokenReadiness(FakeClassifier):
    """A bug, as the call frame sees one: readiness raises what no handler expects."""

    def readiness(self) -> Readiness:
        raise RuntimeError("/secret/path/model.onnx: node 17 exploded")


async def test_a_server_failure_is_internal_with_the_fixed_message_and_the_request_id(
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = Settings(host="127.0.0.1", grpc_port=0)
    factory: Callable[[Settings, Metrics], Any] = BrokenReadiness
    async with serve(settings, factory) as app:
        port = service_state(app.app).grpc_port
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            call = stub.ServerReady(
                service_pb2.ServerReadyRequest(), metadata=(("x-request-id", "req-42"),)
            )
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await call
        metrics = (await app.client.get("/metrics")).text
    assert failed.value.code() == grpc.StatusCode.INTERNAL
    assert failed.value.details() == "internal error; see server logs for request req-42"
    assert ("x-request-id", "req-42") in tuple(failed.value.trailing_metadata() or ())
    assert 'imgcls_grpc_requests_total{code="INTERNAL",method="ServerReady"} 1.0' in metrics
    logged = [r for r in caplog.records if r.name == "service.grpc.calls"]
    assert "node 17 exploded" in str(logged[0].exc_info[1] if logged[0].exc_info else "")
