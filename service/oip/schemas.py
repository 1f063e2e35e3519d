"""The REST JSON bodies of the Open Inference Protocol v2 (KServe's "REST/HTTP" section), with
the parameters of Triton's binary tensor and classification extensions that this server reads.

Requests ignore fields they do not know (clients send more than v2 requires, e.g. Triton's
sequence parameters); the parameters read here are typed, so a wrong type is a 400.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from pydantic import BaseModel, ConfigDict, Field


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=())


# Requests: msgspec Structs, not pydantic models, so that an input's ``data`` stays the JSON
# text it was sent as (msgspec.Raw: checked to be JSON, nothing built) until the header has
# been checked and the values counted (service/oip/tensors.py).

_NonNegative = Annotated[int, msgspec.Meta(ge=0)]
_Positive = Annotated[int, msgspec.Meta(ge=1)]


class InputParameters(msgspec.Struct, frozen=True):
    binary_data_size: _NonNegative | None = None  # bytes of this input after the JSON header


class RequestInput(msgspec.Struct, frozen=True):
    name: str
    shape: list[_NonNegative]
    datatype: str
    parameters: InputParameters = msgspec.field(default_factory=InputParameters)
    # The JSON text of the values; empty when absent (their data is binary).
    data: msgspec.Raw = msgspec.field(default_factory=msgspec.Raw)


class OutputParameters(msgspec.Struct, frozen=True):
    binary_data: bool | None = None  # None: the request's binary_data_output decides
    classification: _Positive | None = None


class RequestOutput(msgspec.Struct, frozen=True):
    name: str
    parameters: OutputParameters = msgspec.field(default_factory=OutputParameters)


class RequestParameters(msgspec.Struct, frozen=True):
    binary_data_output: bool = False
    timeout: _Positive | None = None  # microseconds


class InferenceRequest(msgspec.Struct, frozen=True):
    inputs: Annotated[list[RequestInput], msgspec.Meta(min_length=1)]
    id: str | None = None
    parameters: RequestParameters = msgspec.field(default_factory=RequestParameters)
    outputs: list[RequestOutput] = msgspec.field(default_factory=list)


# Responses


class ResponseOutput(_Out):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None  # binary_data_size when the data is binary
    data: list[Any] | None = None


class InferenceResponse(_Out):
    model_name: str
    model_version: str
    id: str | None = None
    outputs: list[ResponseOutput]


class ServerMetadataResponse(_Out):
    name: str
    version: str
    extensions: list[str]


class TensorMetadata(_Out):
    name: str
    datatype: str
    shape: list[int]


class ModelMetadataResponse(_Out):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]
    parameters: dict[str, Any] = Field(
        description="imgcls extras: precision, provider and why, untrained, preprocessing, "
        "quantization, build-time evaluation, and the input datatypes accepted (UINT8, BYTES)."
    )


class LiveResponse(_Out):
    live: bool


class ReadyResponse(_Out):
    ready: bool
    reason: str | None = None  # why not, when not (as /readyz)


class ModelReadyResponse(_Out):
    name: str
    ready: bool
    reason: str | None = None


class ErrorResponse(_Out):
    error: str
