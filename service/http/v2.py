"""REST routes of the Open Inference Protocol v2 (service/oip/ holds the protocol itself).
Thin, as /v1: read the body, hand it to the protocol's engine, shape the answer.

Errors here take the protocol's shape, ``{"error": "<message>"}`` (service/http/error_shapes.py
chooses it by path, for the app-wide handlers).

An inference body is capped by what it carries: JSON (the whole body, or the header before
binary tensor data) at IMGCLS_MAX_JSON_REQUEST_BYTES, since JSON numbers cost far more to parse
than to send; binary data at IMGCLS_MAX_REQUEST_BYTES. A body over 64 KiB is parsed in a
worker thread, one at a time, so the event loop keeps answering meanwhile."""

from __future__ import annotations

import logging
from functools import partial
from typing import Annotated

import anyio
from fastapi import APIRouter, Path, Request, Response
from fastapi.responses import JSONResponse

from service.errors import ImageTooLarge, UnsupportedMediaType
from service.http.context import set_timing
from service.http.deps import BodyHoldDep, ClassifierDep, SettingsDep
from service.http.disconnect import unless_disconnected
from service.http.errors import openapi_errors
from service.http.health import liveness_fault
from service.http.state import service_state
from service.http.uploads import read_body
from service.inference.classifier import Classifier
from service.limits.body_budget import BodyHold
from service.oip import engine, metadata
from service.oip import rest_codec as rest
from service.oip.schemas import (
    ErrorResponse,
    LiveResponse,
    ModelMetadataResponse,
    ModelReadyResponse,
    ReadyResponse,
    ServerMetadataResponse,
    TensorMetadata,
)
from service.settings import Settings

log = logging.getLogger(__name__)


router = APIRouter(prefix="/v2", tags=["v2 (Open Inference Protocol)"])

# A body this small parses in well under a millisecond: on the event loop, no thread hop.
_PARSE_ON_LOOP_BYTES = 64 * 1024
# Larger ones in a worker thread, one at a time: a JSON parse holds a few times its body.
_JSON_PARSING = anyio.CapacityLimiter(1)

Model = Annotated[str, Path(description="The model's name, as GET /v2/models/{name} lists.")]
Version = Annotated[str, Path(description="The model's version, as its metadata lists.")]
_ERRORS = openapi_errors(
    ErrorResponse,
    {
        400: "malformed request: shape, datatype, data, binary sizes, base64, image count",
        404: "unknown model or version",
        413: "body, JSON header or image (bytes or pixels) over the limit",
        503: "overloaded: queue full or request bodies at their memory budget (Retry-After); "
        "not ready; or draining",
        504: "the request timed out (its parameters.timeout, or the server's)",
    },
)
_INFER_BODY = {
    "requestBody": {
        "content": {
            rest.JSON_TYPE: {"schema": {"type": "object"}},
            rest.BINARY_TYPE: {"schema": {"type": "string", "format": "binary"}},
        },
        "description": "An inference request; with the Inference-Header-Content-Length header, "
        "its JSON header followed by binary tensor data.",
        "required": True,
    }
}


@router.get("", response_model=ServerMetadataResponse)
async def server_metadata() -> ServerMetadataResponse:
    return ServerMetadataResponse(
        name=metadata.SERVER_NAME,
        version=metadata.server_version(),
        extensions=list(metadata.EXTENSIONS),
    )


@router.get("/health/live", response_model=LiveResponse, responses={503: {"model": LiveResponse}})
async def live(request: Request) -> JSONResponse:
    alive = liveness_fault(request) is None  # as /livez
    return JSONResponse(LiveResponse(live=alive).model_dump(), status_code=200 if alive else 503)


@router.get(
    "/health/ready", response_model=ReadyResponse, responses={503: {"model": ReadyResponse}}
)
async def ready(request: Request) -> JSONResponse:
    classifier: Classifier | None = service_state(request.app).classifier
    if classifier is None:
        body = ReadyResponse(ready=False, reason="starting")
    else:
        readiness = classifier.readiness()
        body = ReadyResponse(ready=readiness.ready, reason=readiness.reason)
    return JSONResponse(body.model_dump(), status_code=200 if body.ready else 503)


@router.get("/models/{model}", response_model=ModelMetadataResponse, responses=_ERRORS)
async def model_metadata(model: Model, classifier: ClassifierDep) -> ModelMetadataResponse:
    return _metadata(classifier, model, None)


@router.get(
    "/models/{model}/versions/{version}", response_model=ModelMetadataResponse, responses=_ERRORS
)
async def version_metadata(
    model: Model, version: Version, classifier: ClassifierDep
) -> ModelMetadataResponse:
    return _metadata(classifier, model, version)


@router.get("/models/{model}/ready", response_model=ModelReadyResponse, responses=_ERRORS)
async def model_ready(model: Model, classifier: ClassifierDep) -> JSONResponse:
    return _model_ready(classifier, model, None)


@router.get(
    "/models/{model}/versions/{version}/ready",
    response_model=ModelReadyResponse,
    responses=_ERRORS,
)
async def version_ready(model: Model, version: Version, classifier: ClassifierDep) -> JSONResponse:
    return _model_ready(classifier, model, version)


@router.post("/models/{model}/infer", responses=_ERRORS, openapi_extra=_INFER_BODY)
async def infer(
    request: Request,
    model: Model,
    classifier: ClassifierDep,
    settings: SettingsDep,
    hold: BodyHoldDep,
) -> Response:
    return await _infer(request, classifier, settings, hold, model, None)


@router.post(
    "/models/{model}/versions/{version}/infer", responses=_ERRORS, openapi_extra=_INFER_BODY
)
async def version_infer(
    request: Request,
    model: Model,
    version: Version,
    classifier: ClassifierDep,
    settings: SettingsDep,
    hold: BodyHoldDep,
) -> Response:
    return await _infer(request, classifier, settings, hold, model, version)


async def _infer(
    request: Request,
    classifier: Classifier,
    settings: Settings,
    hold: BodyHold,
    model: str,
    version: str | None,
) -> Response:
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding != "identity":
        raise UnsupportedMediaType(f"Content-Encoding {encoding!r} is not supported; send identity")
    header_length = request.headers.get(rest.HEADER_LENGTH)
    _check_json_size(request, header_length, settings)
    limit = settings.max_json_body_bytes if header_length is None else settings.max_request_bytes
    body = await read_body(request, limit, hold)
    expect = partial(engine.check_header, classifier.meta, settings, model, version)
    parse = partial(rest.parse, body, header_length, model, version, expect)
    if len(body) <= _PARSE_ON_LOOP_BYTES:
        parsed = parse()
    else:
        parsed = await anyio.to_thread.run_sync(parse, limiter=_JSON_PARSING)
    work = engine.infer(classifier, parsed.request, settings)
    result = await unless_disconnected(request.receive, work)
    set_timing(request, result.timing)
    answer = rest.render(result, parsed)
    return Response(answer.body, media_type=answer.media_type, headers=answer.headers)


def _check_json_size(request: Request, header_length: str | None, settings: Settings) -> None:
    """Refuse (413) a JSON part over the JSON cap when its size is known before the body is
    read (a chunked JSON body is stopped by read_body at the first chunk over)."""
    cap = settings.max_json_body_bytes
    size = rest.header_size(header_length)
    if size is None:
        declared = request.headers.get("content-length", "").strip()
        size = int(declared) if declared.isascii() and declared.isdigit() else None
    if size is not None and size > cap:
        raise ImageTooLarge(
            f"the JSON part of this inference request is {size} bytes; the limit is {cap} "
            "(IMGCLS_MAX_JSON_REQUEST_BYTES): send large tensors as binary data (Triton's "
            "binary tensor extension, header Inference-Header-Content-Length)"
        )


def _metadata(classifier: Classifier, model: str, version: str | None) -> ModelMetadataResponse:
    meta = classifier.meta
    metadata.check_model(meta, model, version)
    found = metadata.model_metadata(meta)
    return ModelMetadataResponse(
        name=found.name,
        versions=list(found.versions),
        platform=found.platform,
        inputs=[_tensor(t) for t in found.inputs],
        outputs=[_tensor(t) for t in found.outputs],
        parameters=found.parameters,
    )


def _tensor(tensor: metadata.TensorMeta) -> TensorMetadata:
    return TensorMetadata(name=tensor.name, datatype=tensor.datatype, shape=list(tensor.shape))


def _model_ready(classifier: Classifier, model: str, version: str | None) -> JSONResponse:
    metadata.check_model(classifier.meta, model, version)
    readiness = classifier.readiness()
    body = ModelReadyResponse(name=model, ready=readiness.ready, reason=readiness.reason)
    return JSONResponse(body.model_dump(), status_code=200 if readiness.ready else 503)
