"""One inference request, whichever transport brought it: check the model, version and input,
put each image through the data plane (concurrently: the batcher forms the batches), and build
the outputs asked for.

A request is answered whole or not at all (the protocol has no per-item status): the first
image to fail fails the request, and the images still waiting are cancelled, so they leave the
queue before they cost inference.

``check_header`` is the same check made from the request's header alone (model, version, input
name, datatype, shape, image count): a transport calls it before it decodes any tensor data, so
data the engine would refuse is never built.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from service.errors import ImageTooLarge, ImgclsError, InvalidParameter
from service.inference.postprocess import Logits, softmax
from service.model.loading import ModelMeta
from service.observability.timing import Timing, slowest
from service.oip.metadata import (
    FP32,
    INPUT_DATATYPES,
    PROBABILITIES,
    UINT8,
    check_model,
    input_name,
    logits_name,
)
from service.oip.plane import Plane, Scores
from service.oip.tensors import BYTES, Tensor
from service.settings import Settings

CLASSIFICATION = "classification"


class Header(Protocol):
    """What a tensor's header says, before its data (a Tensor is one too)."""

    @property
    def name(self) -> str: ...

    @property
    def datatype(self) -> str: ...

    @property
    def shape(self) -> tuple[int, ...]: ...


@dataclass(frozen=True, slots=True)
class InputHeader:
    name: str
    datatype: str
    shape: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class OutputRequest:
    name: str
    classification: int = 0  # k > 0: the top k as BYTES "score:index:label", best first


@dataclass(frozen=True, slots=True)
class InferRequest:
    model_name: str
    model_version: str | None  # None or "": whichever serves
    inputs: Sequence[Tensor]
    outputs: Sequence[OutputRequest]  # empty: every output, as tensors
    timeout_s: float | None = None  # the protocol's parameters.timeout, converted


@dataclass(frozen=True, slots=True)
class InferResult:
    model_name: str
    model_version: str
    outputs: list[Tensor]
    timing: Timing  # each phase's slowest image (Server-Timing)


def check_header(
    meta: ModelMeta,
    settings: Settings,
    model: str,
    version: str | None,
    inputs: Sequence[Header],
) -> None:
    """Refuse, from the header alone, a request this engine would refuse for its model,
    version or input."""
    check_model(meta, model, version)
    _the_input(meta, inputs, settings)


async def infer(plane: Plane, request: InferRequest, settings: Settings) -> InferResult:
    meta = plane.meta
    check_header(meta, settings, request.model_name, request.model_version, request.inputs)
    wanted = list(request.outputs) or [OutputRequest(n) for n in _output_names(meta)]
    for output in wanted:
        _check_output(meta, output)
    tensor = request.inputs[0]
    if tensor.datatype == BYTES:
        _check_images(tensor, settings.max_upload_bytes)
    calls = _calls(plane, tensor, request.timeout_s)
    scores = await _all(calls)
    logits = np.stack([s.logits for s in scores])
    outputs = [_output(meta, plane.labels, logits, output) for output in wanted]
    timing = slowest([s.timing for s in scores])
    assert timing is not None  # check_header refuses an empty tensor
    return InferResult(meta.name, meta.version, outputs, timing)


def _output_names(meta: ModelMeta) -> tuple[str, str]:
    return logits_name(meta), PROBABILITIES


def _the_input(meta: ModelMeta, inputs: Sequence[Header], settings: Settings) -> None:
    expected = input_name(meta)
    if len(inputs) != 1 or inputs[0].name != expected:
        names = [tensor.name for tensor in inputs]
        raise InvalidParameter(f"expected one input named {expected!r}, got {names}")
    tensor = inputs[0]
    if tensor.datatype == UINT8:
        _check_pixels(meta, tensor)
    elif tensor.datatype == BYTES:
        _check_image_shape(tensor)
    else:
        raise InvalidParameter(
            f"input {expected!r}: datatype {tensor.datatype} is not accepted; send "
            f"{'|'.join(INPUT_DATATYPES)}: UINT8 [N, {', '.join(map(str, meta.input_shape))}] "
            "pixels or BYTES [N] encoded images"
        )
    count = tensor.shape[0] if tensor.shape else 0
    if not 1 <= count <= settings.max_batch_images:
        raise InvalidParameter(
            f"input {expected!r} holds {count} images; send 1 to {settings.max_batch_images}"
        )


def _check_pixels(meta: ModelMeta, tensor: Header) -> None:
    if len(tensor.shape) != 4 or tensor.shape[1:] != meta.input_shape:
        wanted = ", ".join(map(str, meta.input_shape))
        raise InvalidParameter(
            f"input {tensor.name!r}: UINT8 shape must be [N, {wanted}], got {list(tensor.shape)}"
        )


def _check_image_shape(tensor: Header) -> None:
    if len(tensor.shape) not in (1, 2) or tensor.shape[1:] not in ((), (1,)):
        raise InvalidParameter(
            f"input {tensor.name!r}: BYTES shape must be [N] (or [N, 1]), got {list(tensor.shape)}"
        )


def _check_images(tensor: Tensor, max_bytes: int) -> None:
    for index, image in enumerate(tensor.values):
        if len(image) > max_bytes:
            raise ImageTooLarge(
                f"input {tensor.name!r}: image {index} is {len(image)} bytes; "
                f"the limit is {max_bytes}"
            )


def _check_output(meta: ModelMeta, output: OutputRequest) -> None:
    names = _output_names(meta)
    if output.name not in names:
        raise InvalidParameter(f"unknown output {output.name!r}; the outputs are {list(names)}")
    if not 0 <= output.classification <= meta.num_classes:
        raise InvalidParameter(
            f"output {output.name!r}: classification must be in 1..{meta.num_classes}"
        )


def _calls(
    plane: Plane, tensor: Tensor, timeout_s: float | None
) -> list[Coroutine[Any, Any, Scores]]:
    if isinstance(tensor.values, list):
        return [plane.logits(image, timeout_s=timeout_s) for image in tensor.values]
    return [plane.logits_of_pixels(pixels, timeout_s=timeout_s) for pixels in tensor.values]


async def _all(calls: list[Coroutine[Any, Any, Scores]]) -> list[Scores]:
    tasks: list[asyncio.Task[Scores]] = []
    try:
        async with asyncio.TaskGroup() as group:  # the first failure cancels the others
            tasks = [group.create_task(call) for call in calls]
    except BaseExceptionGroup as failed:
        raise _first(failed) from None
    return [task.result() for task in tasks]


def _first(failed: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error to answer with: a protocol error if any image had one (the data plane raises
    only ImgclsError; anything else is a bug, left to the 500 handler)."""
    errors = list(failed.exceptions)
    return next((e for e in errors if isinstance(e, ImgclsError)), errors[0])


def _output(
    meta: ModelMeta, labels: Sequence[str], logits: Logits, output: OutputRequest
) -> Tensor:
    values = softmax(logits) if output.name == PROBABILITIES else logits
    if output.classification:
        return _classification(output, values, labels)
    return Tensor(output.name, FP32, values.shape, values.astype(np.float32))


def _classification(output: OutputRequest, values: Any, labels: Sequence[str]) -> Tensor:
    """Triton's classification extension: per image, the k largest values of the output as
    "value:index:label", best first (ties: the lower index, as /v1's top-k)."""
    k = output.classification
    rows = []
    for row in values:
        order = np.argsort(-row, kind="stable")[:k]
        rows += [f"{float(row[i])!r}:{int(i)}:{labels[i]}".encode() for i in order]
    return Tensor(output.name, BYTES, (len(values), k), rows)
