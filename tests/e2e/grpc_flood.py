"""A gRPC caller sending many large calls at once, as its own process (python -m
tests.e2e.grpc_flood PORT CALLS BYTES [TOKEN]): ModelInfer requests of one BYTES input of
BYTES zero bytes, all sent together; prints the status codes it got, one per line."""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor

import grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc

from tests.v2.wire import INPUT, MODEL


def main(port: int, calls: int, size: int, token: str | None) -> None:
    request = service_pb2.ModelInferRequest(model_name=MODEL)
    request.inputs.add(name=INPUT, datatype="BYTES", shape=[1])
    request.raw_input_contents.append(bytes(size))
    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    options = [("grpc.max_send_message_length", -1)]
    with grpc.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)

        def call(_: int) -> str:
            try:
                stub.ModelInfer(request, metadata=metadata, timeout=120)
            except grpc.RpcError as error:
                return str(error.code().name)
            return "OK"

        with ThreadPoolExecutor(calls) as pool:
            print("\n".join(pool.map(call, range(calls))))


if __name__ == "__main__":
    port, calls, size = (int(arg) for arg in sys.argv[1:4])
    main(port, calls, size, sys.argv[4] if len(sys.argv) > 4 else None)
