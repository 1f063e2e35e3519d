"""The grpc.aio server for inference.GRPCInferenceService, on the app's own event loop: its
handlers hand images to the same Classifier, so the same batcher, as the REST routes.

Started by the app's lifespan when IMGCLS_GRPC_PORT is set, stopped by it before the classifier
stops. Draining needs nothing of its own: on SIGTERM the classifier refuses new work (gRPC
answers UNAVAILABLE, ServerReady turns false) and the drain waits for every admitted image,
whichever transport brought it; ``stop`` then gives RPCs still open a grace period.
"""

from __future__ import annotations

import logging

import grpc
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from service.metrics import Metrics
from service.oip.grpc_service import InferenceService
from service.oip.plane import Plane
from service.settings import Settings

log = logging.getLogger(__name__)


class GrpcServer:
    def __init__(self, plane: Plane, settings: Settings, metrics: Metrics) -> None:
        self._settings = settings
        self._server = grpc.aio.server(
            maximum_concurrent_rpcs=settings.http_limit_concurrency,
            options=[
                # The same body limit as REST (gRPC's default is 4 MB: 27 images of pixels).
                ("grpc.max_receive_message_length", settings.max_request_bytes),
                ("grpc.max_send_message_length", settings.max_request_bytes),
                # Without this, a second process could bind the same port and share its traffic.
                ("grpc.so_reuseport", 0),
            ],
        )
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(
            InferenceService(plane, settings, metrics), self._server
        )
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
        log.info("gRPC (inference.GRPCInferenceService) on %s:%d", host, self.port)
        return self.port

    async def stop(self, grace_s: float) -> None:
        await self._server.stop(grace_s)
        log.info("gRPC stopped")
