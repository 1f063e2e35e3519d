"""Probes. Liveness asks only "does the event loop answer?" (a constant 200: restarting a
process that is busy or draining would only lose work). Readiness asks "should traffic come
here?": model loaded, warmed, batcher alive, not draining; 503 with the reason otherwise."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from service.classifier import Classifier
from service.schemas import LivenessResponse, ReadinessResponse

router = APIRouter(tags=["probes"])


@router.get("/livez", response_model=LivenessResponse)
async def livez() -> LivenessResponse:
    return LivenessResponse(status="ok")


@router.get(
    "/readyz", response_model=ReadinessResponse, responses={503: {"model": ReadinessResponse}}
)
async def readyz(request: Request) -> JSONResponse:
    # Not ClassifierDep: before the lifespan has built a classifier this must still answer
    # in its own shape (503, reason "starting"), not as an error.
    classifier: Classifier | None = getattr(request.app.state, "classifier", None)
    if classifier is None:
        body = ReadinessResponse(ready=False, reason="starting", details={})
    else:
        readiness = classifier.readiness()
        body = ReadinessResponse(
            ready=readiness.ready, reason=readiness.reason, details=readiness.details
        )
    return JSONResponse(body.model_dump(), status_code=200 if body.ready else 503)
