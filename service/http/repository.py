"""REST routes of the protocol's model repository extension (service/oip/repository.py): the
index of versions on disk, and load/unload, behind the same bearer auth as the rest of /v2.

A load answers once the version is verified, warmed and serving (seconds: the caller waits);
errors take the protocol's shape, ``{"error": "<message>"}``: 404 for an unknown model or
version, 409 for a version refused (its sha256 or warm-up failed: the serving one serves on),
400 for a parameter this server does not take (the protocol answers 400 where /v1 says 422)."""

from __future__ import annotations

from typing import Annotated, TypeVar

import msgspec
from fastapi import APIRouter, Path, Request

from service.errors import InvalidParameter
from service.http.deps import BodyHoldDep, ClassifierDep
from service.http.errors import openapi_errors
from service.http.uploads import read_body
from service.limits.body_budget import BodyHold
from service.oip import repository
from service.oip.schemas import (
    ErrorResponse,
    RepositoryIndexEntry,
    RepositoryIndexRequest,
    RepositoryModelResponse,
    RepositoryRequest,
)

router = APIRouter(prefix="/v2/repository", tags=["v2 (Open Inference Protocol)"])

_MAX_BODY_BYTES = 16 * 1024  # a few parameters
Model = Annotated[str, Path(description="The model's name, as the index lists it.")]
_ERRORS = openapi_errors(
    ErrorResponse,
    {
        404: "unknown model, or no such version on disk",
        409: "the version failed its manifest, sha256 or warm-up: the serving one serves on",
        400: "a malformed body, or a parameter this server does not take",
        503: "shutting down, or (unload) nothing to answer with until the next load",
    },
)
_BODY = {
    "requestBody": {
        "content": {"application/json": {"schema": {"type": "object"}}},
        "description": 'Optional: {"parameters": {"version": "2"}} names the version to load.',
        "required": False,
    }
}
T = TypeVar("T", bound=msgspec.Struct)


@router.post("/index", response_model=list[RepositoryIndexEntry], responses=_ERRORS)
async def index(
    request: Request, classifier: ClassifierDep, hold: BodyHoldDep
) -> list[RepositoryIndexEntry]:
    body = await _body(request, hold, RepositoryIndexRequest)
    entries = repository.index(classifier, ready_only=body.ready)
    return [
        RepositoryIndexEntry(name=e.name, version=e.version, state=e.state, reason=e.reason)
        for e in entries
    ]


@router.post(
    "/models/{model}/load",
    response_model=RepositoryModelResponse,
    responses=_ERRORS,
    openapi_extra=_BODY,
)
async def load(
    request: Request, model: Model, classifier: ClassifierDep, hold: BodyHoldDep
) -> RepositoryModelResponse:
    body = await _body(request, hold, RepositoryRequest)
    meta = await repository.load(classifier, model, body.parameters)
    return RepositoryModelResponse(name=meta.name, version=meta.version, state="READY")


@router.post(
    "/models/{model}/unload",
    response_model=RepositoryModelResponse,
    responses=_ERRORS,
    openapi_extra=_BODY,
)
async def unload(
    request: Request, model: Model, classifier: ClassifierDep, hold: BodyHoldDep
) -> RepositoryModelResponse:
    body = await _body(request, hold, RepositoryRequest)
    version = await repository.unload(classifier, model, body.parameters)
    return RepositoryModelResponse(name=model, version=version, state="UNAVAILABLE")


async def _body(request: Request, hold: BodyHold, kind: type[T]) -> T:
    """The JSON body as ``kind``; an empty body is every default (Triton's clients send none)."""
    raw = await read_body(request, _MAX_BODY_BYTES, hold)
    if not raw.strip():
        return kind()
    try:
        return msgspec.json.decode(raw, type=kind)
    except msgspec.MsgspecError as exc:
        raise InvalidParameter(f"invalid request body: {exc}") from None
