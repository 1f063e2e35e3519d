"""The REST wire of an inference request and its answer: JSON tensors, and Triton's binary
tensor extension in both directions.

Binary request: the body is the JSON header (``Inference-Header-Content-Length`` bytes of it)
followed by the data of each input whose ``parameters.binary_data_size`` is set, in the order of
the inputs; the sizes must add up to exactly what follows the header. Binary response: asked
per output (``parameters.binary_data``), or for every output without that parameter
(request ``parameters.binary_data_output``); then the answer is laid out the same way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from pydantic import ValidationError

from service.errors import InvalidParameter
from service.oip import tensors
from service.oip.engine import InferRequest, InferResult, OutputRequest
from service.oip.schemas import (
    InferenceRequest,
    InferenceResponse,
    RequestInput,
    ResponseOutput,
)
from service.oip.tensors import Tensor

HEADER_LENGTH = "Inference-Header-Content-Length"
JSON_TYPE = "application/json"
BINARY_TYPE = "application/octet-stream"


@dataclass(frozen=True, slots=True)
class Parsed:
    request: InferRequest
    id: str | None
    binary: dict[str, bool]  # output name -> answer it as binary data
    binary_default: bool  # for outputs not named in the request (none were asked for)


@dataclass(frozen=True, slots=True)
class Answer:
    body: bytes
    media_type: str
    headers: dict[str, str]


def parse(body: bytes, header_length: str | None, model: str, version: str | None) -> Parsed:
    header, blob = _split(body, header_length)
    try:
        parsed = InferenceRequest.model_validate_json(header)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        raise InvalidParameter(f"invalid inference request: {where}: {first['msg']}") from None
    timeout = parsed.parameters.timeout
    request = InferRequest(
        model_name=model,
        model_version=version,
        inputs=_inputs(parsed.inputs, blob),
        outputs=[OutputRequest(o.name, o.parameters.classification or 0) for o in parsed.outputs],
        timeout_s=None if timeout is None else timeout / 1e6,
    )
    default = parsed.parameters.binary_data_output
    binary = {
        o.name: default if o.parameters.binary_data is None else o.parameters.binary_data
        for o in parsed.outputs
    }
    return Parsed(request, parsed.id, binary, default)


def render(result: InferResult, parsed: Parsed) -> Answer:
    outputs: list[ResponseOutput] = []
    blobs: list[bytes] = []
    for tensor in result.outputs:
        if parsed.binary.get(tensor.name, parsed.binary_default):
            raw = tensors.to_raw(tensor)
            blobs.append(raw)
            outputs.append(_described(tensor, {"binary_data_size": len(raw)}, None))
        else:
            outputs.append(_described(tensor, None, tensors.to_json(tensor)))
    response = InferenceResponse(
        model_name=result.model_name,
        model_version=result.model_version,
        id=parsed.id,
        outputs=outputs,
    )
    header = json.dumps(response.model_dump(exclude_none=True), separators=(",", ":")).encode()
    if not blobs:
        return Answer(header, JSON_TYPE, {})
    return Answer(header + b"".join(blobs), BINARY_TYPE, {HEADER_LENGTH: str(len(header))})


def _split(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    if header_length is None:
        return body, b""
    if not header_length.strip().isdigit() or int(header_length) > len(body):
        raise InvalidParameter(
            f"{HEADER_LENGTH} must be a byte count within the body's {len(body)} bytes, "
            f"got {header_length!r}"
        )
    length = int(header_length)
    return body[:length], body[length:]


def _inputs(inputs: list[RequestInput], blob: bytes) -> list[Tensor]:
    offset = 0
    decoded = []
    for item in inputs:
        shape = tensors.check_header(item.name, item.datatype, item.shape)
        size = item.parameters.binary_data_size
        if size is not None:
            if offset + size > len(blob):
                raise InvalidParameter(
                    f"input {item.name!r}: binary_data_size {size} runs past the "
                    f"{len(blob)} bytes of binary data after the header"
                )
            values = tensors.from_raw(item.name, item.datatype, shape, blob[offset : offset + size])
            offset += size
        elif item.data is not None:
            values = tensors.from_json(item.name, item.datatype, shape, item.data)
        else:
            raise InvalidParameter(f"input {item.name!r} has neither data nor binary_data_size")
        decoded.append(Tensor(item.name, item.datatype, shape, values))
    if offset != len(blob):
        raise InvalidParameter(
            f"the inputs' binary_data_size add up to {offset} bytes, but {len(blob)} bytes "
            "follow the JSON header"
        )
    return decoded


def _described(
    tensor: Tensor, parameters: dict[str, int] | None, data: list[object] | None
) -> ResponseOutput:
    return ResponseOutput(
        name=tensor.name,
        shape=list(tensor.shape),
        datatype=tensor.datatype,
        parameters=parameters,
        data=data,
    )
