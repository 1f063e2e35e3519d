"""gRPC in the process's life: SIGTERM drains it like REST (ServerReady turns false, new
ModelInfer calls get UNAVAILABLE, the admitted one is answered) and the process exits 0; a
client that goes away (its deadline passed) has its image dropped from the queue."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from tritonclient.grpc import service_pb2, service_pb2_grpc

from tests.e2e.conftest import ServiceProcess, free_port, run_service, wait_until
from tests.v2.wire import INPUT, MODEL

pytestmark = pytest.mark.slow

# A long batch window holds one image in the queue, without any timing in the test: it cannot
# finish before the window ends.
HOLD = {"IMGCLS_MAX_BATCH_WAIT_S": "5", "IMGCLS_REQUEST_TIMEOUT_S": "60"}


def queue_depth(server: ServiceProcess) -> int:
    depth: int = httpx.get(f"{server.url}/readyz", timeout=2).json()["details"]["queue_depth"]
    return depth


def infer_request(image: bytes) -> Any:
    request = service_pb2.ModelInferRequest(model_name=MODEL)
    request.inputs.add(name=INPUT, datatype="BYTES", shape=[1])
    request.raw_input_contents.append(len(image).to_bytes(4, "little") + image)
    return request


def test_sigterm_drains_grpc_and_exits_0(
    tmp_path: Path, trained_model_dir: Path, photo_bytes: Callable[[str], bytes]
) -> None:
    port = free_port()
    with run_service(tmp_path, trained_model_dir, IMGCLS_GRPC_PORT=str(port), **HOLD) as server:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        request = infer_request(photo_bytes("coffee.png"))
        held = stub.ModelInfer.future(request, timeout=60)
        wait_until(lambda: queue_depth(server) == 1, 60, "1 queued", server.log)
        server.process.send_signal(signal.SIGTERM)
        ready = service_pb2.ServerReadyRequest()
        wait_until(lambda: not stub.ServerReady(ready).ready, 10, "not ready", server.log)
        with pytest.raises(grpc.RpcError) as refused:
            stub.ModelInfer(request, timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "shutting down" in refused.value.details()
        answer = held.result()  # admitted before SIGTERM: answered
        assert [o.name for o in answer.outputs] == ["logits", "probabilities"]
        assert server.process.wait(timeout=60) == 0
        channel.close()
    assert "gRPC stopped" in server.log_text()


def test_a_grpc_caller_past_its_deadline_leaves_the_queue(
    tmp_path: Path, trained_model_dir: Path, photo_bytes: Callable[[str], bytes]
) -> None:
    port = free_port()
    with run_service(tmp_path, trained_model_dir, IMGCLS_GRPC_PORT=str(port), **HOLD) as server:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            with pytest.raises(grpc.RpcError) as expired:
                stub.ModelInfer(infer_request(photo_bytes("coffee.png")), timeout=1.0)
            assert expired.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        # Dropped from the queue at its deadline, not when its 5 s batch window would end.
        wait_until(lambda: queue_depth(server) == 0, 3, "queue empty", server.log)
        assert "Traceback" not in server.log_text()
