"""inference.GRPCInferenceService, the protocol's gRPC service, on the same engine as REST.

The messages and the servicer base are the generated ones tritonclient[grpc] ships (the
published definitions, not a copy). Triton's service is a superset of the v2 one: its methods
beyond v2 (model config, statistics, repository, shared memory, trace, log settings,
streaming) answer UNIMPLEMENTED.

Errors: the ImgclsError tree maps onto gRPC status codes (``STATUS``), counted in the same
rejection metric as REST's. The RPC's deadline bounds the request as ``parameters.timeout``
does; when the caller cancels or its deadline passes, grpc.aio cancels the handler, which
cancels the images still queued.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from service.errors import ImgclsError, InvalidParameter
from service.limits.body_budget import BodyBudget
from service.observability.logs import ACCESS_LOGGER, request_id_var
from service.observability.metrics import Metrics
from service.observability.request_id import request_id_from
from service.observability.timing import server_timing
from service.oip import engine, metadata, tensors
from service.oip.engine import InferRequest, InferResult, OutputRequest
from service.oip.plane import Plane
from service.oip.tensors import Tensor
from service.settings import Settings

log = logging.getLogger(__name__)
access_log = logging.getLogger(ACCESS_LOGGER)

T = TypeVar("T")

STATUS: dict[int, grpc.StatusCode] = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    404: grpc.StatusCode.NOT_FOUND,
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
# Triton's methods beyond the v2 protocol.
TRITON_ONLY = (
    "ModelStreamInfer",
    "ModelConfig",
    "ModelStatistics",
    "RepositoryIndex",
    "RepositoryModelLoad",
    "RepositoryModelUnload",
    "SystemSharedMemoryStatus",
    "SystemSharedMemoryRegister",
    "SystemSharedMemoryUnregister",
    "CudaSharedMemoryStatus",
    "CudaSharedMemoryRegister",
    "CudaSharedMemoryUnregister",
    "TraceSetting",
    "LogSettings",
)
# Which repeated field of InferTensorContents carries each datatype (raw_input_contents is
# what tritonclient sends; the typed fields are the protocol's other way).
_CONTENTS = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
}


def status_of(exc: ImgclsError) -> grpc.StatusCode:
    if exc.code == _OVERLOADED:
        return grpc.StatusCode.RESOURCE_EXHAUSTED
    return STATUS.get(exc.status, grpc.StatusCode.INTERNAL)


class InferenceService(pb_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    def __init__(
        self, plane: Plane, settings: Settings, metrics: Metrics, bodies: BodyBudget
    ) -> None:
        self._plane = plane
        self._settings = settings
        self._metrics = metrics
        self._bodies = bodies

    async def ServerLive(self, request: Any, context: Any) -> Any:
        return pb.ServerLiveResponse(live=self._plane.liveness() is None)  # as /livez

    async def ServerReady(self, request: Any, context: Any) -> Any:
        return pb.ServerReadyResponse(ready=self._plane.readiness().ready)

    async def ModelReady(self, request: Any, context: Any) -> Any:
        def ready() -> Any:
            metadata.check_model(self._plane.meta, request.name, request.version)
            return pb.ModelReadyResponse(ready=self._plane.readiness().ready)

        return await self._guard("ModelReady", context, _now(ready))

    async def ServerMetadata(self, request: Any, context: Any) -> Any:
        return pb.ServerMetadataResponse(
            name=metadata.SERVER_NAME,
            version=metadata.server_version(),
            extensions=list(metadata.EXTENSIONS),
        )

    async def ModelMetadata(self, request: Any, context: Any) -> Any:
        def found() -> Any:
            meta = self._plane.meta
            metadata.check_model(meta, request.name, request.version)
            return _metadata_response(metadata.model_metadata(meta))

        return await self._guard("ModelMetadata", context, _now(found))

    async def ModelInfer(self, request: Any, context: Any) -> Any:
        started = time.perf_counter()
        token = request_id_var.set(_request_id(context))
        try:
            work = self._infer(request, context, started)
            return await self._guard("ModelInfer", context, work)
        finally:
            request_id_var.reset(token)

    async def _infer(self, request: Any, context: Any, started: float) -> Any:
        # gRPC hands over the whole message, so its bytes are taken from the REST routes' body
        # budget only now: they are counted while the request waits for its answer, the long
        # part; a message that does not fit is refused (RESOURCE_EXHAUSTED, as any overload).
        with self._bodies.hold() as hold:
            hold.take(request.ByteSize())
            infer_request = _infer_request(request, context.time_remaining())
            result = await engine.infer(self._plane, infer_request, self._settings)
        timing = server_timing(result.timing, time.perf_counter() - started)
        context.set_trailing_metadata((("server-timing", timing), ("x-request-id", _id())))
        return _infer_response(result, request.id)

    async def _guard(self, method: str, context: Any, work: Awaitable[T]) -> T:
        """Answer an ImgclsError with its status code; log one access line either way."""
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            return await work
        except ImgclsError as exc:
            code = status_of(exc)
            self._metrics.rejections.labels(reason=exc.code).inc()
            if exc.status >= 500:
                log.warning("%s: %s", exc.code, exc.message)
            await context.abort(code, exc.caller_message(_id()))
            raise  # abort() raises; this line only tells the type checker so
        finally:
            _access(method, code, time.perf_counter() - started)


def _unimplemented(name: str) -> Callable[[Any, Any, Any], Awaitable[None]]:
    async def method(self: Any, request: Any, context: Any) -> None:
        message = f"{name} is a Triton extension this server does not implement"
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, message)

    method.__name__ = name
    return method


# The base's versions are synchronous stubs that raise NotImplementedError; these answer
# UNIMPLEMENTED from the event loop like every other method here.
for _name in TRITON_ONLY:
    setattr(InferenceService, _name, _unimplemented(_name))


async def _now(make: Callable[[], T]) -> T:
    return make()


def _id() -> str:
    return request_id_var.get() or "-"


def _request_id(context: Any) -> str:
    """A valid x-request-id metadata value, else a new id (the REST middleware's rule)."""
    pairs = context.invocation_metadata() or ()
    headers = [(k.encode(), v.encode()) for k, v in pairs if isinstance(v, str)]
    return request_id_from(headers)


def _access(method: str, code: grpc.StatusCode, duration_s: float) -> None:
    access_log.info(
        "grpc %s %s",
        method,
        code.name,
        extra={
            "method": "grpc",
            "route": method,
            "status": code.name,
            "duration_ms": round(duration_s * 1e3, 3),
        },
    )


def _metadata_response(found: metadata.ModelMetadata) -> Any:
    def tensor(t: metadata.TensorMeta) -> Any:
        return pb.ModelMetadataResponse.TensorMetadata(
            name=t.name, datatype=t.datatype, shape=list(t.shape)
        )

    return pb.ModelMetadataResponse(
        name=found.name,
        versions=list(found.versions),
        platform=found.platform,
        inputs=[tensor(t) for t in found.inputs],
        outputs=[tensor(t) for t in found.outputs],
    )


def _infer_request(request: Any, remaining_s: float | None) -> InferRequest:
    timeout_s = remaining_s
    if "timeout" in request.parameters:
        asked = request.parameters["timeout"].int64_param / 1e6
        timeout_s = asked if timeout_s is None else min(asked, timeout_s)
    return InferRequest(
        model_name=request.model_name,
        model_version=request.model_version or None,
        inputs=_inputs(request),
        outputs=[OutputRequest(o.name, _classification(o.parameters)) for o in request.outputs],
        timeout_s=timeout_s,
    )


def _classification(parameters: Any) -> int:
    if "classification" not in parameters:
        return 0
    k = int(parameters["classification"].int64_param)
    if k < 1:
        raise InvalidParameter(f"classification must be a positive count, got {k}")
    return k


def _inputs(request: Any) -> list[Tensor]:
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise InvalidParameter(
            f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs: send one per input"
        )
    return [_input(item, raw[i] if raw else None) for i, item in enumerate(request.inputs)]


def _input(item: Any, raw: bytes | None) -> Tensor:
    shape = tensors.check_header(item.name, item.datatype, list(item.shape))
    if raw is not None:
        return Tensor(
            item.name, item.datatype, shape, tensors.from_raw(item.name, item.datatype, shape, raw)
        )
    if item.datatype == tensors.BYTES:
        elements = list(item.contents.bytes_contents)
        if len(elements) != tensors.element_count(shape):
            raise InvalidParameter(
                f"input {item.name!r}: {len(elements)} elements for shape {list(shape)}"
            )
        return Tensor(item.name, item.datatype, shape, elements)
    field = _CONTENTS.get(item.datatype)
    if field is None:
        raise InvalidParameter(f"input {item.name!r}: {item.datatype} has no contents field")
    values = list(getattr(item.contents, field))
    return Tensor(
        item.name, item.datatype, shape, tensors.from_json(item.name, item.datatype, shape, values)
    )


def _infer_response(result: InferResult, request_id: str) -> Any:
    return pb.ModelInferResponse(
        model_name=result.model_name,
        model_version=result.model_version,
        id=request_id,
        outputs=[_output(t) for t in result.outputs],
        raw_output_contents=[tensors.to_raw(t) for t in result.outputs],
    )


def _output(tensor: Tensor) -> Any:
    return pb.ModelInferResponse.InferOutputTensor(
        name=tensor.name, datatype=tensor.datatype, shape=list(tensor.shape)
    )
