"""The REST JSON bodies of the Open Inference Protocol v2 (KServe's "REST/HTTP" section), with
the parameters of Triton's binary tensor and classification extensions that this server reads.

Requests ignore fields they do not know (clients send more than v2 requires, e.g. Triton's
sequence parameters); the parameters read here are typed, so a wrong type is a 400.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, PositiveInt


class _In(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", protected_namespaces=())


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=())


# Requests


class InputParameters(_In):
    binary_data_size: NonNegativeInt | None = None  # bytes of this input after the JSON header


class RequestInput(_In):
    name: str
    shape: list[NonNegativeInt]
    datatype: str
    parameters: InputParameters = InputParameters()
    data: list[Any] | None = None  # absent when the data is binary


class OutputParameters(_In):
    binary_data: bool | None = None  # None: the request's binary_data_output decides
    classification: PositiveInt | None = None


class RequestOutput(_In):
    name: str
    parameters: OutputParameters = OutputParameters()


class RequestParameters(_In):
    binary_data_output: bool = False
    timeout: PositiveInt | None = None  # microseconds


class InferenceRequest(_In):
    id: str | None = None
    parameters: RequestParameters = RequestParameters()
    inputs: list[RequestInput] = Field(min_length=1)
    outputs: list[RequestOutput] = []


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
