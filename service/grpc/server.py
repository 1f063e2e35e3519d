"""The grpc.aio server for inference.GRPCInferenceService, on the app's own event loop: its
handlers hand images to the same Classifier, so the same batcher, as the REST routes.

Started by the app's lifespan when IMGCLS_GRPC_PORT is set, stopped by it before the classifier
stops. Draining needs nothing of its own: on SIGTERM the classifier refuses new work (gRPC
answers UNAVAILABLE, ServerReady turns false) and the drain waits for every admitted image,
whichever transport brought it; ``stop`` then gives RPCs still open a grace period.

Every call is counted by method and status code, and timed (``CallMetrics``), as the HTTP
middleware does for REST: imgcls_grpc_requests_total and imgcls_grpc_request_duration_seconds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from service.grpc.auth import BearerAuthInterceptor
from service.grpc.servicer import InferenceService
from service.limits.body_budget import BodyBudget
from service.observability.metrics import Metrics
from service.oip.plane import Plane
from service.security import Tokens
from service.settings import Settings

log = logging.getLogger(__name__)

# The method label of a call to a method this server does not have (bounded, like REST's).
UNMATCHED = "unmatched"
Behavior = Callable[[Any, Any], Awaitable[Any]]


class CallMetrics(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Counts each call by method and final status code, and times it. The code is the one the
    handler aborted with, else OK; a call that raised something else is UNKNOWN (gRPC's
    answer); one cancelled is DEADLINE_EXCEEDED when its deadline had passed, else CANCELLED.
    Calls refused by grpcio itself before any handler ran (a message over the size limit, the
    concurrent-RPC limit) are not seen here."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    async def intercept_service(
        self, continuation: Callable[[Any], Awaitable[Any]], details: Any
    ) -> Any:
        handler = await continuation(details)
        if handler is None:  # grpcio answers UNIMPLEMENTED
            self._metrics.grpc_requests.labels(method=UNMATCHED, code="UNIMPLEMENTED").inc()
            return None
        method = str(details.method).rsplit("/", 1)[-1]
        if handler.unary_unary is not None:
            wrap = grpc.unary_unary_rpc_method_handler
            behavior = handler.unary_unary
        elif handler.stream_stream is not None:  # ModelStreamInfer, answered UNIMPLEMENTED
            wrap = grpc.stream_stream_rpc_method_handler
            behavior = handler.stream_stream
        else:
            return handler
        return wrap(
            self._observed(method, behavior),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _observed(self, method: str, behavior: Behavior) -> Behavior:
        async def observed(request: Any, context: Any) -> Any:
            started, code = time.perf_counter(), "OK"
            try:
                return await behavior(request, context)
            except grpc.aio.AbortError:
                code = _code_name(context.code())
                raise
            except asyncio.CancelledError:
                remaining = context.time_remaining()
                past = remaining is not None and remaining <= 0
                code = "DEADLINE_EXCEEDED" if past else "CANCELLED"
                raise
            except Exception:
                code = "UNKNOWN"
                raise
            finally:
                self._metrics.grpc_requests.labels(method=method, code=code).inc()
                elapsed = time.perf_counter() - started
                self._metrics.grpc_request_duration.labels(method=method).observe(elapsed)

        return observed


def _code_name(code: object) -> str:
    """The status code's name; grpc.aio's context holds a StatusCode or its integer value."""
    if isinstance(code, grpc.StatusCode):
        return str(code.name)
    found = (str(c.name) for c in grpc.StatusCode if c.value[0] == code)
    return next(found, "UNKNOWN")


class GrpcServer:
    def __init__(
        self, plane: Plane, settings: Settings, metrics: Metrics, bodies: BodyBudget
    ) -> None:
        self._settings = settings
        interceptors: list[grpc.aio.ServerInterceptor] = [CallMetrics(metrics)]
        if (tokens := Tokens.from_settings(settings)) is not None:  # after the metrics: counted
            interceptors.append(BearerAuthInterceptor(tokens, settings.auth_probes, metrics))
        self._server = grpc.aio.server(
            interceptors=interceptors,
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
            InferenceService(plane, settings, metrics, bodies), self._server
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
