"""The bearer tokens of service.http.auth, for the gRPC service: a call must carry metadata
``authorization: Bearer <token>`` (what tritonclient.grpc sends with ``headers=``), compared
in constant time with the same tokens, or it ends UNAUTHENTICATED before its handler runs and
before any of its message is read (the refusal takes its request as a stream and never reads
it: a caller without a token costs one HTTP/2 flow-control window, whatever it sends).
The health methods (ServerLive, ServerReady, ModelReady) follow IMGCLS_AUTH_PROBES, as the
REST probes do. The refusal is counted and logged by the call frame (service/grpc/calls.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from service.errors import Unauthorized
from service.grpc.calls import method_label
from service.security import Tokens, bearer_token

_PROBES = frozenset({"ServerLive", "ServerReady", "ModelReady"})
_MISSING = "a valid bearer token is required (metadata authorization: Bearer <token>)"


class BearerAuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(self, tokens: Tokens, auth_probes: bool) -> None:
        self._tokens = tokens
        self._auth_probes = auth_probes

    async def intercept_service(
        self, continuation: Callable[[Any], Awaitable[Any]], details: Any
    ) -> Any:
        if method_label(str(details.method)) in _PROBES and not self._auth_probes:
            return await continuation(details)
        presented = _bearer(details.invocation_metadata or ())
        if presented is not None and self._tokens.accepts(presented):
            return await continuation(details)
        return _refusal(_MISSING if presented is None else "the bearer token is not valid")


def _bearer(metadata: Any) -> bytes | None:
    for key, value in metadata:
        if key == "authorization":
            return bearer_token(value if isinstance(value, bytes) else str(value).encode())
    return None


def _refusal(message: str) -> grpc.RpcMethodHandler:
    async def refuse(requests: AsyncIterator[bytes], context: Any) -> None:
        raise Unauthorized(message)

    return grpc.stream_unary_rpc_method_handler(refuse)
