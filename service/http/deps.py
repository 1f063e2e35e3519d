"""Typed dependency aliases: a route asks for ``classifier: ClassifierDep`` and FastAPI hands it
the one Classifier that app.py's lifespan created (never a global).

``async def`` although nothing here awaits: FastAPI runs a plain ``def`` dependency in a worker
thread, a thread hop per dependency per request. Measured under overload (py-spy), those hops
were the largest share of the event loop's time spent on requests it then refused."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request

from service.errors import NotReady
from service.http.state import service_state
from service.inference.classifier import Classifier
from service.limits.body_budget import BodyHold
from service.observability.metrics import Metrics
from service.settings import Settings


async def get_classifier(request: Request) -> Classifier:
    classifier: Classifier | None = service_state(request.app).classifier
    if classifier is None:  # the lifespan has not run yet
        raise NotReady("the service is starting", retry_after_s=1)
    return classifier


async def get_settings(request: Request) -> Settings:
    return service_state(request.app).settings


async def get_metrics(request: Request) -> Metrics:
    return service_state(request.app).metrics


async def body_hold(request: Request) -> AsyncIterator[BodyHold]:
    """The request's account in the body budget, given back when the route is done with the
    body (its image decoded and answered, or an error raised)."""
    budget = service_state(request.app).body_budget
    with budget.hold() as hold:
        yield hold


ClassifierDep = Annotated[Classifier, Depends(get_classifier)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
BodyHoldDep = Annotated[BodyHold, Depends(body_hold)]
