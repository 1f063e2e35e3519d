"""Typed dependency aliases: a route asks for ``classifier: ClassifierDep`` and FastAPI hands it
the one Classifier that app.py's lifespan created (never a global).

``async def`` although nothing here awaits: FastAPI runs a plain ``def`` dependency in a worker
thread, a thread hop per dependency per request. Measured under overload (py-spy), those hops
were the largest share of the event loop's time spent on requests it then refused."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request

from service.bodies import BodyBudget, BodyHold
from service.classifier import Classifier
from service.errors import NotReady
from service.metrics import Metrics
from service.settings import Settings


async def get_classifier(request: Request) -> Classifier:
    classifier: Classifier | None = getattr(request.app.state, "classifier", None)
    if classifier is None:  # the lifespan has not run yet
        raise NotReady("the service is starting", retry_after_s=1)
    return classifier


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_metrics(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


async def body_hold(request: Request) -> AsyncIterator[BodyHold]:
    """The request's account in the body budget, given back when the route is done with the
    body (its image decoded and answered, or an error raised)."""
    budget: BodyBudget = request.app.state.body_budget
    with budget.hold() as hold:
        yield hold


ClassifierDep = Annotated[Classifier, Depends(get_classifier)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
BodyHoldDep = Annotated[BodyHold, Depends(body_hold)]
