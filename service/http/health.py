"""Probes. Liveness asks "would a restart help?": 503 only when the event loop answers but the
inference path is broken for good (the batcher's loop ended, or a batch has hung longer than
IMGCLS_INFERENCE_STALL_S); a process that is loading, busy or draining is alive, since
restarting it would only lose work. Readiness asks "should traffic come here?": model loaded,
warmed, batcher healthy, not draining; 503 with the reason otherwise."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from service.http.schemas import LivenessResponse, ReadinessResponse
from service.http.state import service_state
from service.inference.classifier import Classifier

router = APIRouter(tags=["probes"])


@router.get("/livez", response_model=LivenessResponse, responses={503: {"model": LivenessResponse}})
async def livez(request: Request) -> JSONResponse:
    fault = liveness_fault(request)
    body = LivenessResponse(status="ok" if fault is None else "failed", reason=fault)
    return JSONResponse(
        body.model_dump(exclude_none=True), status_code=200 if fault is None else 503
    )


def liveness_fault(request: Request) -> str | None:
    classifier: Classifier | None = service_state(request.app).classifier
    return None if classifier is None else classifier.liveness()


@router.get(
    "/readyz", response_model=ReadinessResponse, responses={503: {"model": ReadinessResponse}}
)
async def readyz(request: Request) -> JSONResponse:
    # Not ClassifierDep: before the lifespan has built a classifier this must still answer
    # in its own shape (503, reason "starting"), not as an error.
    classifier: Classifier | None = service_state(request.app).classifier
    if classifier is None:
        body = ReadinessResponse(ready=False, reason="starting", details={})
    else:
        readiness = classifier.readiness()
        body = ReadinessResponse(
            ready=readiness.ready, reason=readiness.reason, details=readiness.details
        )
    return JSONResponse(body.model_dump(), status_code=200 if body.ready else 503)
