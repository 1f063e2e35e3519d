"""The REST wire of an inference request and its answer: JSON tensors, and Triton's binary
tensor extension in both directions.

Binary request: the body is the JSON header (``Inference-Header-Content-Length`` bytes of it)
followed by the data of each input whose ``parameters.binary_data_size`` is set, in the order of
the inputs; the sizes must add up to exactly what follows the header. Binary response: asked
per output (``parameters.binary_data``), or for every output without that parameter
(request ``parameters.binary_data_output``); then the answer is laid out the same way.

Parsing checks before it builds: the JSON header is decoded with each input's data left as
text, the header is checked against the model (``Expect``, the engine's own check), and only
then is each input's data counted against its shape and decoded. A JSON body of tens of MB
takes hundreds of ms to parse: the caller runs ``parse`` in a worker thread for such bodies.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import msgspec

from service.errors import InvalidParameter
from service.oip import tensors
from service.oip.engine import Header, InferRequest, InferResult, InputHeader, OutputRequest
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
_DECODER = msgspec.json.Decoder(InferenceRequest)

# Refuses a request whose inputs' headers the model would refuse (engine.check_header, bound
# to the model, version and settings).
Expect = Callable[[Sequence[Header]], None]


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


def parse(body: bytes, header_length: str | None, model: str, version: str | None,
          expect: Expect) -> Parsed:  # fmt: skip
    header, blob = split(body, header_length)
    try:
        parsed = _DECODER.decode(header)
    except msgspec.MsgspecError as exc:
        raise InvalidParameter(f"invalid inference request: {exc}") from None
    headers = [
        InputHeader(i.name, i.datatype, tensors.check_header(i.name, i.datatype, i.shape))
        for i in parsed.inputs
    ]
    expect(headers)
    timeout = parsed.parameters.timeout
    request = InferRequest(
        model_name=model,
        model_version=version,
        inputs=_inputs(parsed.inputs, headers, blob),
        outputs=[OutputRequest(o.name, o.parameters.classification or 0) for o in parsed.outputs],
        timeout_s=None if timeout is None else timeout / 1e6,
    )
    default = parsed.parameters.binary_data_output
    binary = {
        o.name: default if o.parameters.binary_data is None else o.parameters.binary_data
        for o in parsed.outputs
    }
    return Parsed(request, parsed.id, binary, default)


def header_size(header_length: str | None) -> int | None:
    """The Inference-Header-Content-Length as a byte count (None when absent)."""
    if header_length is None:
        return None
    text = header_length.strip()
    # ASCII digits only: str.isdigit() accepts "²", which int() then refuses.
    if not (text.isascii() and text.isdigit()):
        raise InvalidParameter(f"{HEADER_LENGTH} must be a byte count, got {header_length!r}")
    return int(text)


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


def split(body: bytes, header_length: str | None) -> tuple[memoryview, memoryview]:
    """The JSON header and the binary data after it: views of the body, not copies."""
    view = memoryview(body)
    length = header_size(header_length)
    if length is None:
        return view, view[len(body) :]
    if length > len(body):
        raise InvalidParameter(
            f"{HEADER_LENGTH} must be a byte count within the body's {len(body)} bytes, "
            f"got {header_length!r}"
        )
    return view[:length], view[length:]


def _inputs(
    inputs: list[RequestInput], headers: list[InputHeader], blob: memoryview
) -> list[Tensor]:
    offset = 0
    decoded = []
    for item, header in zip(inputs, headers, strict=True):
        name, datatype, shape = header.name, header.datatype, header.shape
        size = item.parameters.binary_data_size
        if size is not None:
            if offset + size > len(blob):
                raise InvalidParameter(
                    f"input {name!r}: binary_data_size {size} runs past the "
                    f"{len(blob)} bytes of binary data after the header"
                )
            values = tensors.from_raw(name, datatype, shape, blob[offset : offset + size])
            offset += size
        elif (data := bytes(item.data)) not in (b"", b"null"):
            values = tensors.from_json(name, datatype, shape, data)
        else:
            raise InvalidParameter(f"input {name!r} has neither data nor binary_data_size")
        decoded.append(Tensor(name, datatype, shape, values))
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
