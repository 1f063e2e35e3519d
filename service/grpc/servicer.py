"""inference.GRPCInferenceService, the protocol's gRPC service, on the same engine as REST.

The messages are the generated ones tritonclient[grpc] ships (the published definitions, not a
copy). Triton's service is a superset of the v2 one: its methods beyond v2 (model config,
statistics, repository, shared memory, trace, log settings, streaming) answer UNIMPLEMENTED.

Each method gets its request message as bytes, received through a gate (service/grpc/receive.py),
or none when it needs none. Errors are raised as the ImgclsError tree and answered by the call
frame (service/grpc/calls.py). ModelInfer's message counts in the REST routes' body budget from
its arrival until its answer; its header is checked against the model before any tensor data
is decoded; ``parameters.timeout`` must be a positive count of microseconds, as over REST, and
bounds the request with the RPC's own deadline; when the caller cancels or its deadline passes,
grpc.aio cancels the handler, which cancels the images still queued.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc
from google.protobuf.message import DecodeError  # type: ignore[import-untyped]
from tritonclient.grpc import service_pb2 as pb

from service.errors import InvalidParameter
from service.grpc.receive import MessageGate
from service.limits.body_budget import BodyBudget
from service.observability.timing import server_timing
from service.oip import engine, metadata, tensors
from service.oip.engine import InferRequest, InferResult, InputHeader, OutputRequest
from service.oip.plane import Plane
from service.oip.tensors import Tensor
from service.settings import Settings

log = logging.getLogger(__name__)

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
# A message this small decodes in well under a millisecond: on the event loop, no thread hop.
_DECODE_ON_LOOP_BYTES = 64 * 1024


class InferenceService:
    def __init__(
        self,
        plane: Plane,
        settings: Settings,
        bodies: BodyBudget,
        gate: MessageGate,
        probe_gate: MessageGate,
    ) -> None:
        self._plane = plane
        self._settings = settings
        self._bodies = bodies
        self._gate = gate
        self._probe_gate = probe_gate  # ModelReady's, so a public probe never delays inference

    async def server_live(self, context: Any) -> Any:
        return pb.ServerLiveResponse(live=self._plane.liveness() is None)  # as /livez

    async def server_ready(self, context: Any) -> Any:
        return pb.ServerReadyResponse(ready=self._plane.readiness().ready)

    async def server_metadata(self, context: Any) -> Any:
        return pb.ServerMetadataResponse(
            name=metadata.SERVER_NAME,
            version=metadata.server_version(),
            extensions=list(metadata.EXTENSIONS),
        )

    async def model_ready(self, context: Any) -> Any:
        async with self._probe_gate.turn():
            request = _parsed(pb.ModelReadyRequest, await self._probe_gate.read(context))
        metadata.check_model(self._plane.meta, request.name, request.version)
        return pb.ModelReadyResponse(ready=self._plane.readiness().ready)

    async def model_metadata(self, context: Any) -> Any:
        async with self._gate.turn():
            request = _parsed(pb.ModelMetadataRequest, await self._gate.read(context))
        meta = self._plane.meta
        metadata.check_model(meta, request.name, request.version)
        return _metadata_response(metadata.model_metadata(meta))

    async def model_infer(self, context: Any) -> Any:
        started = time.perf_counter()
        # Counted from its arrival until its answer, like a REST body; a message that does not
        # fit is refused (RESOURCE_EXHAUSTED, as any overload). Its turn lasts until it is
        # decoded: the message, grpcio's copy and the decoded one exist together until then.
        with self._bodies.hold() as hold:
            async with self._gate.turn():
                message = await self._gate.read(context)
                hold.take(len(message))
                request, answer_id = await self._decode(message, context.time_remaining())
                del message  # the request holds what is needed of it
            result = await engine.infer(self._plane, request, self._settings)
        timing = server_timing(result.timing, time.perf_counter() - started)
        context.set_trailing_metadata((*context.trailing_metadata(), ("server-timing", timing)))
        return _infer_response(result, answer_id)

    async def _decode(self, message: bytes, remaining_s: float | None) -> tuple[InferRequest, str]:
        if len(message) <= _DECODE_ON_LOOP_BYTES:
            return self._decoded(message, remaining_s)
        return await asyncio.to_thread(self._decoded, message, remaining_s)

    def _decoded(self, message: bytes, remaining_s: float | None) -> tuple[InferRequest, str]:
        request = _parsed(pb.ModelInferRequest, message)
        headers = [
            InputHeader(i.name, i.datatype, tensors.check_header(i.name, i.datatype, i.shape))
            for i in request.inputs
        ]
        engine.check_header(
            self._plane.meta,
            self._settings,
            request.model_name,
            request.model_version or None,
            headers,
        )
        infer_request = InferRequest(
            model_name=request.model_name,
            model_version=request.model_version or None,
            inputs=_inputs(request, headers),
            outputs=[OutputRequest(o.name, _classification(o.parameters)) for o in request.outputs],
            timeout_s=_timeout_s(request.parameters, remaining_s),
        )
        return infer_request, request.id


def unimplemented(name: str) -> Callable[[Any], Awaitable[None]]:
    async def method(context: Any) -> None:
        message = f"{name} is a Triton extension this server does not implement"
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, message)

    return method


def _parsed(kind: Any, message: bytes) -> Any:
    try:
        return kind.FromString(message)
    except DecodeError:
        raise InvalidParameter(f"the request is not a valid {kind.__name__}") from None


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


def _timeout_s(parameters: Any, remaining_s: float | None) -> float | None:
    """The request's timeout: its ``timeout`` parameter (microseconds) within the RPC's
    deadline."""
    if "timeout" not in parameters:
        return remaining_s
    asked = _positive(parameters["timeout"], "timeout") / 1e6
    return asked if remaining_s is None else min(asked, remaining_s)


def _classification(parameters: Any) -> int:
    if "classification" not in parameters:
        return 0
    return _positive(parameters["classification"], "classification")


def _positive(parameter: Any, name: str) -> int:
    """An integer parameter (int64_param, or uint64_param), refused unless positive."""
    kind = parameter.WhichOneof("parameter_choice")
    value = getattr(parameter, kind) if kind in ("int64_param", "uint64_param") else None
    if value is None or value < 1:
        got = "nothing" if kind is None else f"{kind} {getattr(parameter, kind)!r}"
        raise InvalidParameter(f"parameters.{name} must be a positive int64_param, got {got}")
    return int(value)


def _inputs(request: Any, headers: Sequence[InputHeader]) -> list[Tensor]:
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise InvalidParameter(
            f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs: send one per input"
        )
    return [
        _input(item, header, raw[i] if raw else None)
        for i, (item, header) in enumerate(zip(request.inputs, headers, strict=True))
    ]


def _input(item: Any, header: InputHeader, raw: bytes | None) -> Tensor:
    name, datatype, shape = header.name, header.datatype, header.shape
    if raw is not None:
        return Tensor(name, datatype, shape, tensors.from_raw(name, datatype, shape, raw))
    if datatype == tensors.BYTES:
        elements = item.contents.bytes_contents
        if len(elements) != tensors.element_count(shape):
            raise InvalidParameter(
                f"input {name!r}: {len(elements)} elements for shape {list(shape)}"
            )
        return Tensor(name, datatype, shape, list(elements))
    field = _CONTENTS.get(datatype)
    if field is None:
        raise InvalidParameter(f"input {name!r}: {datatype} has no contents field")
    values = getattr(item.contents, field)
    return Tensor(name, datatype, shape, tensors.from_values(name, datatype, shape, values))


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
