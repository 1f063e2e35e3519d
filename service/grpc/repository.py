"""Triton's model repository methods over gRPC (RepositoryIndex, RepositoryModelLoad,
RepositoryModelUnload), on the same transport-neutral operations as REST
(service/oip/repository.py). A load's parameters arrive as ModelRepositoryParameter values:
``version`` as string_param (or int64_param)."""

from __future__ import annotations

from typing import Any

from tritonclient.grpc import service_pb2 as pb

from service.grpc.receive import MessageGate
from service.grpc.servicer import parsed
from service.oip import repository
from service.oip.repository import ModelControl


class RepositoryService:
    def __init__(self, control: ModelControl, gate: MessageGate) -> None:
        self._control = control
        self._gate = gate

    async def index(self, context: Any) -> Any:
        request = await self._read(pb.RepositoryIndexRequest, context)
        entries = repository.index(self._control, ready_only=request.ready)
        return pb.RepositoryIndexResponse(
            models=[
                pb.RepositoryIndexResponse.ModelIndex(
                    name=e.name, version=e.version, state=e.state, reason=e.reason
                )
                for e in entries
            ]
        )

    async def load(self, context: Any) -> Any:
        request = await self._read(pb.RepositoryModelLoadRequest, context)
        await repository.load(self._control, request.model_name, _values(request.parameters))
        return pb.RepositoryModelLoadResponse()

    async def unload(self, context: Any) -> Any:
        request = await self._read(pb.RepositoryModelUnloadRequest, context)
        await repository.unload(self._control, request.model_name, _values(request.parameters))
        return pb.RepositoryModelUnloadResponse()

    async def _read(self, kind: Any, context: Any) -> Any:
        async with self._gate.turn():
            return parsed(kind, await self._gate.read(context))


def _values(parameters: Any) -> dict[str, Any]:
    return {key: getattr(p, p.WhichOneof("parameter_choice") or "string_param")
            for key, p in parameters.items()}  # fmt: skip
