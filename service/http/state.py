"""What the HTTP app holds for its life, typed, and the one accessor that reads it from
``app.state``: routes, middleware and the server's protocol ask ``service_state(app)`` instead of
looking names up on Starlette's untyped state."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING

from starlette.applications import Starlette

from service.inference.classifier import Classifier
from service.limits.body_budget import BodyBudget
from service.observability.metrics import Metrics
from service.settings import Settings

if TYPE_CHECKING:
    from service.http.door import EarlyDoor

_KEY = "imgcls"


@dataclass(slots=True)
class ServiceState:
    settings: Settings
    metrics: Metrics
    body_budget: BodyBudget
    early_door: EarlyDoor | None = None  # None until wired, or IMGCLS_EARLY_REFUSAL off
    classifier: Classifier | None = None  # None until the lifespan has built it
    start_task: asyncio.Task[None] | None = None  # loading and warming; tests await it
    grpc_port: int | None = None  # the gRPC port bound, when gRPC is on
    draining: bool = False  # responses carry Connection: close from then on


def attach(app: Starlette, state: ServiceState) -> ServiceState:
    setattr(app.state, _KEY, state)
    return state


def service_state(app: Starlette) -> ServiceState:
    state: ServiceState = getattr(app.state, _KEY)
    return state
