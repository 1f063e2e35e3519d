"""The grpc.aio server for inference.GRPCInferenceService, on the app's own event loop: its
handlers hand images to the same Classifier, so the same batcher, as the REST routes.

Started by the app's lifespan when IMGCLS_GRPC_PORT is set, stopped by it before the classifier
stops. Draining needs nothing of its own: on SIGTERM the classifier refuses new work (gRPC
answers UNAVAILABLE, ServerReady turns false) and the drain waits for every admitted image,
whichever transport brought it; ``stop`` then gives RPCs still open a grace period.

What a call may cost (docs/decisions/grpc-message-reads.md): a message is at most
IMGCLS_MAX_REQUEST_BYTES, as a REST body; none is read before its call is authenticated; at
most IMGCLS_BODY_BUDGET_BYTES / IMGCLS_MAX_REQUEST_BYTES are received at once (the public
ModelReady probe through a gate of its own, so it cannot delay inference); ServerLive,
ServerReady, ServerMetadata and Triton's unimplemented methods read nothing.
"""

from __future__ import annotations

import logging

import grpc
from tritonclient.grpc import service_pb2 as pb

from service.grpc.auth import BearerAuthInterceptor
from service.grpc.calls import METHODS, SERVICE, CallFrame
from service.grpc.receive import MessageGate, handler
from service.grpc.servicer import TRITON_ONLY, InferenceService, unimplemented
from service.limits.body_budget import BodyBudget
from service.observability.metrics import Metrics
from service.oip.plane import Plane
from service.security import Tokens
from service.settings import Settings

log = logging.getLogger(__name__)

# ModelReady's message names a model: a few bytes, sent in one packet by any real client.
_PROBE_RECEIVE_S = 1.0


def handlers(service: InferenceService) -> dict[str, grpc.RpcMethodHandler]:
    """A handler for every method of the service (METHODS): none left to grpcio's defaults."""
    found = {
        "ServerLive": handler(service.server_live, pb.ServerLiveResponse.SerializeToString),
        "ServerReady": handler(service.server_ready, pb.ServerReadyResponse.SerializeToString),
        "ServerMetadata": handler(
            service.server_metadata, pb.ServerMetadataResponse.SerializeToString
        ),
        "ModelReady": handler(service.model_ready, pb.ModelReadyResponse.SerializeToString),
        "ModelMetadata": handler(
            service.model_metadata, pb.ModelMetadataResponse.SerializeToString
        ),
        "ModelInfer": handler(service.model_infer, pb.ModelInferResponse.SerializeToString),
    }
    found |= {name: handler(unimplemented(name), None) for name in TRITON_ONLY}
    assert set(found) == METHODS, "every method of the service needs a handler here"
    return found


class GrpcServer:
    def __init__(
        self, plane: Plane, settings: Settings, metrics: Metrics, bodies: BodyBudget
    ) -> None:
        self._settings = settings
        interceptors: list[grpc.aio.ServerInterceptor] = [CallFrame(metrics)]
        if (tokens := Tokens.from_settings(settings)) is not None:  # inside the frame: counted
            interceptors.append(BearerAuthInterceptor(tokens, settings.auth_probes))
        self._server = grpc.aio.server(
            interceptors=interceptors,
            maximum_concurrent_rpcs=settings.http_limit_concurrency,
            options=[
                # The same limit as a REST body (gRPC's default is 4 MB: 27 images of pixels).
                ("grpc.max_receive_message_length", settings.max_request_bytes),
                ("grpc.max_send_message_length", settings.max_request_bytes),
                # A stream whose message is not being read (waiting for its turn, refused) then
                # holds one initial window, 64 KiB: with BDP probing the window grows to MBs
                # (measured: 32 unread 60 MB calls held 180 MB). A message being read opens its
                # own window to its size, so transfers are not slower (docs/decisions/).
                ("grpc.http2.bdp_probe", 0),
                # Without this, a second process could bind the same port and share its traffic.
                ("grpc.so_reuseport", 0),
            ],
        )
        self.gate = MessageGate(settings.grpc_receiving_at_once, settings.grpc_receive_timeout_s)
        probe_gate = MessageGate(1, min(_PROBE_RECEIVE_S, settings.grpc_receive_timeout_s))
        service = InferenceService(plane, settings, bodies, self.gate, probe_gate)
        found = handlers(service)
        self._server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE.full_name, found),)
        )
        self._server.add_registered_method_handlers(SERVICE.full_name, found)
        self.port: int | None = None

    async def start(self, port: int) -> int:
        """Bind and serve; returns the port bound (0 asks for a free one). Raises RuntimeError
        when the address cannot be bound: a server that cannot serve gRPC must not start."""
        host = self._settings.host
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.port = self._server.add_insecure_port(address)
        if not self.port:  # older grpcio versions return 0 instead of raising
            raise RuntimeError(f"gRPC could not bind {address}")
        await self._server.start()
        log.info(
            "gRPC (inference.GRPCInferenceService) on %s:%d, receiving %d message(s) at once",
            host,
            self.port,
            self.gate.slots,
        )
        return self.port

    async def stop(self, grace_s: float) -> None:
        await self._server.stop(grace_s)
        log.info("gRPC stopped")
