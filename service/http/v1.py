"""REST v1: /v1/classify (one image), /v1/classify/batch (several, answered in order, each
failing alone) and /v1/model. Thin: read the upload, call the classifier, shape the answer."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Query, Request

from service.errors import ImageTooLarge, ImgclsError, InvalidParameter, Unavailable
from service.http.context import get_request_id, set_timing
from service.http.deps import BodyHoldDep, ClassifierDep, MetricsDep, SettingsDep
from service.http.disconnect import unless_disconnected
from service.http.error_shapes import error_detail
from service.http.errors import openapi_errors
from service.http.schemas import (
    BatchItem,
    ClassifyBatchResponse,
    ClassifyResponse,
    ErrorBody,
    ModelResponse,
    PredictionOut,
    TimingOut,
)
from service.http.uploads import Upload, read_many, read_one
from service.inference.classifier import Classification, Classifier, Serving
from service.inference.preprocess import MEDIA_TYPES
from service.model.loading import ModelMeta
from service.observability.timing import Timing, slowest

router = APIRouter(prefix="/v1", tags=["v1"])

# No upper bound in the schema: the model's class count is known only once it is loaded
# (GET /v1/model: num_classes); a larger top_k is refused with a 422 that names it.
TopK = Annotated[
    int,
    Query(ge=1, description="How many classes to return, best first (at most num_classes)."),
]

_ERRORS = openapi_errors(
    ErrorBody,
    {
        400: "undecodable or corrupt image",
        413: "body or image (bytes or pixels) over the limit",
        415: "unsupported Content-Type or image format",
        422: "invalid parameter",
        503: "overloaded: queue full or request bodies at their memory budget (Retry-After); "
        "not ready; or draining",
        504: "the request timed out",
    },
)
_IMAGE_BODY = {
    "requestBody": {
        "content": {
            **{kind: {"schema": {"type": "string", "format": "binary"}} for kind in MEDIA_TYPES},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                }
            },
            "application/json": {
                "schema": {"type": "object", "properties": {"image": {"type": "string"}}}
            },
        },
        "required": True,
    }
}


@router.post(
    "/classify", response_model=ClassifyResponse, responses=_ERRORS, openapi_extra=_IMAGE_BODY
)
async def classify(
    request: Request,
    classifier: ClassifierDep,
    settings: SettingsDep,
    hold: BodyHoldDep,
    top_k: TopK = 5,
) -> ClassifyResponse:
    _check_top_k(classifier, top_k)
    upload = await read_one(request, settings, hold)
    with classifier.hold() as serving:  # the version that answers, whatever swaps meanwhile
        work = classifier.classify(
            upload.data, top_k=top_k, content_type=upload.content_type, on=serving
        )
        result = await unless_disconnected(request.receive, work)
    set_timing(request, result.timing)
    meta = serving.meta
    return ClassifyResponse(
        model=meta.name,
        model_version=result.version,
        untrained=meta.untrained,
        predictions=_predictions(result),
        timing=_timing(result.timing),
    )


@router.post(
    "/classify/batch",
    response_model=ClassifyBatchResponse,
    response_model_exclude_none=True,
    responses=_ERRORS,
)
async def classify_batch(
    request: Request,
    classifier: ClassifierDep,
    settings: SettingsDep,
    metrics: MetricsDep,
    hold: BodyHoldDep,
    top_k: TopK = 5,
) -> ClassifyBatchResponse:
    _check_top_k(classifier, top_k)
    uploads = await read_many(request, settings, hold)
    with classifier.hold() as serving:  # every image on one version, the one the answer names
        work = _classify_all(classifier, serving, uploads, top_k)
        outcomes = await unless_disconnected(request.receive, work)
    _raise_if_all_unavailable(outcomes)
    for outcome in outcomes:
        if isinstance(outcome, ImgclsError):
            metrics.rejections.labels(reason=outcome.code).inc()
    timings = [o.timing for o in outcomes if isinstance(o, Classification)]
    if (timing := slowest(timings)) is not None:
        set_timing(request, timing)
    meta = serving.meta
    return ClassifyBatchResponse(
        model=meta.name,
        model_version=meta.version,
        untrained=meta.untrained,
        results=[_item(i, outcome, get_request_id(request)) for i, outcome in enumerate(outcomes)],
    )


@router.get("/model", response_model=ModelResponse)
async def model(classifier: ClassifierDep) -> ModelResponse:
    return _model_response(classifier.meta)


def _check_top_k(classifier: Classifier, top_k: int) -> None:
    """A top_k over the model's class count fails the request as a whole, before its body is
    read (the classifier checks each image again; a model not loaded yet is its to refuse)."""
    try:
        num_classes = classifier.meta.num_classes
    except Unavailable:
        return
    if top_k > num_classes:
        raise InvalidParameter(f"top_k must be in 1..{num_classes}, got {top_k}")


async def _classify_all(
    classifier: Classifier, on: Serving, uploads: list[Upload | ImageTooLarge], top_k: int
) -> list[Classification | ImgclsError]:
    return await asyncio.gather(*(_classify_item(classifier, on, u, top_k) for u in uploads))


async def _classify_item(
    classifier: Classifier, on: Serving, upload: Upload | ImgclsError, top_k: int
) -> Classification | ImgclsError:
    if isinstance(upload, ImgclsError):
        return upload
    try:
        return await classifier.classify(
            upload.data, top_k=top_k, content_type=upload.content_type, on=on
        )
    except ImgclsError as exc:
        return exc


def _raise_if_all_unavailable(outcomes: list[Classification | ImgclsError]) -> None:
    """When the service refuses every image (not ready, draining, overloaded), answer the
    request as a whole with that 503 and its Retry-After, as /v1/classify would: a client's
    retry logic then works the same for both routes."""
    first = outcomes[0]
    if isinstance(first, Unavailable) and all(isinstance(o, Unavailable) for o in outcomes):
        raise first


def _item(index: int, outcome: Classification | ImgclsError, request_id: str) -> BatchItem:
    if isinstance(outcome, ImgclsError):
        return BatchItem(
            index=index, status=outcome.status, error=error_detail(outcome, request_id)
        )
    return BatchItem(
        index=index,
        status=200,
        predictions=_predictions(outcome),
        timing=_timing(outcome.timing),
    )


def _predictions(result: Classification) -> list[PredictionOut]:
    return [
        PredictionOut(label=p.label, class_index=p.class_index, score=p.score)
        for p in result.predictions
    ]


def _timing(timing: Timing) -> TimingOut:
    return TimingOut(
        decode_ms=round(timing.decode_s * 1e3, 3),
        queue_ms=round(timing.queue_s * 1e3, 3),
        inference_ms=round(timing.inference_s * 1e3, 3),
        batch_size=timing.batch_size,
    )


def _model_response(meta: ModelMeta) -> ModelResponse:
    return ModelResponse(
        name=meta.name,
        version=meta.version,
        untrained=meta.untrained,
        precision=meta.precision,
        model_file=meta.model_file,
        provider=meta.provider,
        provider_reason=meta.provider_reason,
        num_classes=meta.num_classes,
        input_shape=meta.input_shape,
        max_batch_size=meta.max_batch_size,
        intra_op_threads=meta.intra_op_threads,
        decode_workers=meta.decode_workers,
        inference_streams=meta.inference_streams,
        inference_streams_reason=meta.inference_streams_reason,
        warmup_latency_ms={n: round(s * 1e3, 3) for n, s in meta.warmup_latency_s.items()},
        top1_int8=meta.served_top1,
    )
