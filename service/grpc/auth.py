"""The bearer tokens of service.http.auth, for the gRPC service: a call must carry metadata
``authorization: Bearer <token>`` (what tritonclient.grpc sends with ``headers=``), compared
in constant time with the same tokens, or it ends UNAUTHENTICATED before its handler runs.
The health methods (ServerLive, ServerReady, ModelReady) follow IMGCLS_AUTH_PROBES, as the
REST probes do."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from service.observability.metrics import Metrics
from service.security import Tokens, bearer_token

_PROBES = frozenset({"ServerLive", "ServerReady", "ModelReady"})
_MISSING = "a valid bearer token is required (metadata authorization: Bearer <token>)"


class BearerAuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(self, tokens: Tokens, auth_probes: bool, metrics: Metrics) -> None:
        self._tokens = tokens
        self._auth_probes = auth_probes
        self._metrics = metrics

    async def intercept_service(
        self, continuation: Callable[[Any], Awaitable[Any]], details: Any
    ) -> Any:
        method = str(details.method).rsplit("/", 1)[-1]
        if method in _PROBES and not self._auth_probes:
            return await continuation(details)
        presented = _bearer(details.invocation_metadata or ())
        if presented is not None and self._tokens.accepts(presented):
            return await continuation(details)
        self._metrics.rejections.labels(reason="unauthorized").inc()
        message = _MISSING if presented is None else "the bearer token is not valid"
        return _refusal(message)


def _bearer(metadata: Any) -> bytes | None:
    for key, value in metadata:
        if key == "authorization":
            return bearer_token(value if isinstance(value, bytes) else str(value).encode())
    return None


def _refusal(message: str) -> Any:
    async def refuse(request: Any, context: Any) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    # Raw bytes in and out (no (de)serializer): the refusal reads nothing of the request.
    return grpc.unary_unary_rpc_method_handler(refuse)
