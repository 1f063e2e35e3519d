"""The frame every gRPC call runs in, whatever its method and however it ends: ``CallFrame``,
the outermost interceptor. It

- names the call by its method when that is one of the service's (``METHODS``, from the
  published service definition), else ``unmatched``: a caller cannot add metric series;
- gives it a request id (a valid ``x-request-id`` metadata value, else a new one), returned in
  the trailing metadata and carried by its log lines;
- answers an ImgclsError with its status code (``status_of``) and counts it by reason, as REST
  does; anything else raised is the server's own failure: logged with its traceback, answered
  INTERNAL with the fixed public message and the request id, never the exception's text;
- counts and times the call (imgcls_grpc_requests_total, imgcls_grpc_request_duration_seconds)
  and writes its access-log line;
- with tracing on, gives ModelInfer a server span, its parent from the ``traceparent`` metadata
  (service/observability/tracing.py).

Calls grpcio refuses before any interceptor runs (over the concurrent-RPC limit) are not seen.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from tritonclient.grpc import service_pb2 as pb

from service.errors import ImgclsError
from service.observability.logs import ACCESS_LOGGER, request_id_var
from service.observability.metrics import Metrics
from service.observability.request_id import request_id_from
from service.observability.tracing import RequestSpan, Tracing, note_error, note_exception

log = logging.getLogger(__name__)
access_log = logging.getLogger(ACCESS_LOGGER)

SERVICE = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
METHODS = frozenset(method.name for method in SERVICE.methods)
UNMATCHED = "unmatched"
_PREFIX = f"/{SERVICE.full_name}/"

STATUS: dict[int, grpc.StatusCode] = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    404: grpc.StatusCode.NOT_FOUND,
    409: grpc.StatusCode.FAILED_PRECONDITION,  # a model version refused to load
    # gRPC's own answer to a message over its size limit
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    500: grpc.StatusCode.INTERNAL,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}
# Overloaded is a 503 over REST, but gRPC has a code of its own for "retry later, I am full".
_OVERLOADED = "overloaded"
# The calls traced, and the codes that are the server's failure (the semantic conventions').
_TRACED = frozenset({"ModelInfer"})
_SERVER_FAULTS = frozenset(
    {"UNKNOWN", "DEADLINE_EXCEEDED", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS"}
)

Behavior = Callable[[Any, Any], Awaitable[Any]]


def status_of(exc: ImgclsError) -> grpc.StatusCode:
    if exc.code == _OVERLOADED:
        return grpc.StatusCode.RESOURCE_EXHAUSTED
    return STATUS.get(exc.status, grpc.StatusCode.INTERNAL)


def method_label(path: str) -> str:
    """``/inference.GRPCInferenceService/ModelInfer`` -> ``ModelInfer``; anything else (another
    service, a made-up method) -> ``unmatched``."""
    name = path.removeprefix(_PREFIX)
    return name if path.startswith(_PREFIX) and name in METHODS else UNMATCHED


class CallFrame(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(self, metrics: Metrics, tracing: Tracing | None = None) -> None:
        self._metrics = metrics
        self._tracing = tracing

    async def intercept_service(
        self, continuation: Callable[[Any], Awaitable[Any]], details: Any
    ) -> Any:
        method = method_label(str(details.method))
        handler = await continuation(details)
        if handler is None:  # grpcio answers UNIMPLEMENTED
            self._metrics.grpc_requests.labels(method=UNMATCHED, code="UNIMPLEMENTED").inc()
            return None
        kinds = (
            (handler.unary_unary, grpc.unary_unary_rpc_method_handler),
            (handler.stream_unary, grpc.stream_unary_rpc_method_handler),
            (handler.unary_stream, grpc.unary_stream_rpc_method_handler),
            (handler.stream_stream, grpc.stream_stream_rpc_method_handler),
        )
        behavior, wrap = next((b, w) for b, w in kinds if b is not None)
        framed = self._framed_stream if handler.response_streaming else self._framed
        return wrap(
            framed(method, behavior),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _framed(self, method: str, behavior: Behavior) -> Behavior:
        async def framed(request: Any, context: Any) -> Any:
            async with self._call(method, context):
                return await behavior(request, context)

        return framed

    def _framed_stream(self, method: str, behavior: Behavior) -> Behavior:
        async def framed(request: Any, context: Any) -> None:
            async with self._call(method, context):
                await behavior(request, context)

        return framed

    def _call(self, method: str, context: Any) -> _Call:
        tracing = self._tracing if method in _TRACED else None
        return _Call(self._metrics, method, context, tracing)


class _Call:
    """One call's frame, as an async context manager around its behaviour."""

    def __init__(
        self, metrics: Metrics, method: str, context: Any, tracing: Tracing | None
    ) -> None:
        self._metrics = metrics
        self._method = method
        self._context = context
        self._tracing = tracing
        self._span: RequestSpan | None = None
        self._code = "OK"
        self._started = time.perf_counter()

    async def __aenter__(self) -> None:
        request_id = _request_id(self._context)
        self._token = request_id_var.set(request_id)
        self._context.set_trailing_metadata((("x-request-id", request_id),))
        if self._tracing is not None:
            self._span = self._tracing.start(
                f"{SERVICE.full_name}/{self._method}",
                self._context.invocation_metadata() or (),
                {"rpc.system.name": "grpc", "rpc.method": f"{SERVICE.full_name}/{self._method}"},
            )
            self._span_token = self._span.enter()

    async def __aexit__(self, kind: type[BaseException] | None, exc: Any, tb: Any) -> bool:
        del tb  # this frame outlives the call in the abort's traceback: keep no frames alive
        try:
            if exc is not None:
                await self._answer(exc)
            return False
        finally:
            self._done()
            if exc is not None and not isinstance(exc, grpc.aio.AbortError):
                # Its traceback holds the handler's frames, and so the request's message, in a
                # cycle that only a full garbage collection frees: tens of MB a failed call.
                exc.__traceback__ = None

    async def _answer(self, exc: BaseException) -> None:
        """Set the call's code; abort it (raising AbortError) for an error not yet answered."""
        context = self._context
        if isinstance(exc, grpc.aio.AbortError):
            self._code = _code_name(context.code())
        elif isinstance(exc, asyncio.CancelledError):
            remaining = context.time_remaining()
            past = remaining is not None and remaining <= 0
            self._code = "DEADLINE_EXCEEDED" if past else "CANCELLED"
        elif isinstance(exc, ImgclsError):
            code = status_of(exc)
            self._code = code.name
            self._metrics.rejections.labels(reason=exc.code).inc()
            note_error(exc.code, exc.status, exc.message)
            if exc.status >= 500:
                log.warning("%s: %s", exc.code, exc.message)
            await self._abort(code, exc.caller_message(request_id_var.get() or "-"))
        elif isinstance(exc, Exception):
            self._code = "INTERNAL"
            note_exception(exc)
            log.error("gRPC %s failed", self._method, exc_info=exc)
            message = ImgclsError("unhandled").caller_message(request_id_var.get() or "-")
            await self._abort(grpc.StatusCode.INTERNAL, message)

    async def _abort(self, code: grpc.StatusCode, message: str) -> None:
        """Send the status (raising AbortError). When it cannot be sent because the caller is
        gone (its deadline passed as the error was raised), the call ends as cancelled, which
        grpc does not log, instead of grpc's ExecuteBatchError traceback."""
        context = self._context
        try:
            await context.abort(code, message)
        except grpc.aio.AbortError:
            raise
        except Exception as failed:
            remaining = context.time_remaining()
            if context.done() or (remaining is not None and remaining <= 0):
                raise asyncio.CancelledError("the caller left before its status") from failed
            raise

    def _done(self) -> None:
        elapsed = time.perf_counter() - self._started
        self._metrics.grpc_requests.labels(method=self._method, code=self._code).inc()
        self._metrics.grpc_request_duration.labels(method=self._method).observe(elapsed)
        _access(self._method, self._code, elapsed)
        if self._span is not None:
            failed = self._code if self._code in _SERVER_FAULTS else None
            self._span.end({"rpc.response.status_code": self._code}, failed)
            self._span.leave(self._span_token)
        request_id_var.reset(self._token)


def _code_name(code: object) -> str:
    """The status code's name; grpc.aio's context holds a StatusCode or its integer value."""
    if isinstance(code, grpc.StatusCode):
        return str(code.name)
    found = (str(c.name) for c in grpc.StatusCode if c.value[0] == code)
    return next(found, "UNKNOWN")


def _request_id(context: Any) -> str:
    """A valid x-request-id metadata value, else a new id (the REST middleware's rule)."""
    pairs = context.invocation_metadata() or ()
    headers = [(k.encode(), v.encode()) for k, v in pairs if isinstance(v, str)]
    return request_id_from(headers)


def _access(method: str, code: str, duration_s: float) -> None:
    access_log.info(
        "grpc %s %s",
        method,
        code,
        extra={
            "method": "grpc",
            "route": method,
            "status": code,
            "duration_ms": round(duration_s * 1e3, 3),
        },
    )
