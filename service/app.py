"""create_app(settings): the one place that wires settings, metrics, the classifier, the routes,
the API docs pages, the error handlers and the request middleware together.

Lifespan: the server starts answering at once (/livez 200, /readyz 503 "loading"), while the
classifier loads, verifies and warms the model in the background; readiness turns 200 only
when Classifier.start() has returned. A model that fails to start is fatal: the failure is
logged and ``on_start_failure`` (``python -m service`` passes one that stops the server with
exit code 1) is called, so an orchestrator sees a crash, not a pod that is never ready.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from service.http import health, prometheus, v1, v2
from service.http.auth import BearerAuth, needs_token
from service.http.docs import install_docs
from service.http.door import AdmissionDoor, EarlyDoor
from service.http.errors import install_error_handlers
from service.http.middleware import RequestMiddleware
from service.http.page import install_page
from service.http.state import ServiceState, attach, service_state
from service.inference.classifier import Classifier
from service.limits.body_budget import BodyBudget
from service.observability.metrics import Metrics
from service.security import Tokens
from service.settings import Settings

if TYPE_CHECKING:
    from service.grpc.server import GrpcServer

log = logging.getLogger(__name__)

ClassifierFactory = Callable[[Settings, Metrics], Classifier]
StartFailure = Callable[[BaseException], None]


def create_app(
    settings: Settings,
    *,
    metrics: Metrics | None = None,
    classifier_factory: ClassifierFactory = Classifier,
    on_start_failure: StartFailure | None = None,
) -> FastAPI:
    metrics = metrics or Metrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.classifier = classifier = classifier_factory(settings, metrics)
        # Before the model loads: a port that cannot be bound fails the start at once.
        grpc_server = await _start_grpc(classifier, settings, metrics, state.body_budget)
        state.grpc_port = grpc_server.port if grpc_server is not None else None
        # Tests await this task instead of polling /readyz.
        state.start_task = start_task = asyncio.create_task(_start(classifier, on_start_failure))
        try:
            yield
        finally:
            start_task.cancel()
            if grpc_server is not None:  # drained already: this ends idle streams
                await grpc_server.stop(settings.drain_timeout_s)
            await classifier.stop()
            log.info("stopped")

    app = FastAPI(
        title="imgcls",
        summary="Image classification on CPU (ONNX Runtime, int8): the model and labels its "
        "build was given (GET /v1/model).",
        version="1",
        lifespan=lifespan,
        # FastAPI's own pages load their JS/CSS from a CDN (blank offline): see service.http.docs.
        docs_url=None,
        redoc_url=None,
    )
    state = attach(app, ServiceState(settings, metrics, BodyBudget(settings.body_budget_bytes)))
    budget = state.body_budget
    metrics.body_bytes.set_function(lambda: budget.in_use)
    install_error_handlers(app)
    # Outermost last: RequestMiddleware -> CORS -> BearerAuth -> AdmissionDoor -> routes.
    # CORS answers a browser's preflight before auth is asked; a 401 is still logged and
    # counted; only an authenticated caller learns that the service is overloaded.
    if settings.early_refusal:  # the early refusals, all fenced in service/http/door.py
        app.add_middleware(AdmissionDoor, metrics=metrics)
    if (tokens := Tokens.from_settings(settings)) is not None:
        app.add_middleware(BearerAuth, tokens=tokens, needs=needs_token(settings), metrics=metrics)
    if origins := [o.strip() for o in settings.cors_origins.split(",") if o.strip()]:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
            expose_headers=["X-Request-ID", "Server-Timing", "Retry-After", "Cache-Status"],
        )
    app.add_middleware(RequestMiddleware, metrics=metrics)
    if settings.early_refusal:  # what the HTTP protocol may refuse before the app runs
        state.early_door = EarlyDoor(app, metrics, tokens, cors=bool(origins))
    for module in (v1, v2, health, prometheus):
        app.include_router(module.router)
    install_page(app)
    install_docs(app)
    return app


async def _start(classifier: Classifier, on_failure: StartFailure | None) -> None:
    try:
        await classifier.start()
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.critical("the model failed to start; the service cannot serve", exc_info=True)
        if on_failure is not None:
            on_failure(exc)
        return
    meta = classifier.meta
    if meta.untrained:
        # Said loudly, here, in the API (untrained: true) and on the web page.
        log.warning(
            "serving an UNTRAINED model (%s, random weights): its predictions are noise",
            meta.name,
        )


async def _start_grpc(
    classifier: Classifier, settings: Settings, metrics: Metrics, bodies: BodyBudget
) -> GrpcServer | None:
    """The Open Inference Protocol's gRPC service, when IMGCLS_GRPC_PORT is set. Its modules
    (grpcio, tritonclient's generated definitions) are imported only then."""
    if settings.grpc_port is None:
        return None
    from service.grpc.server import GrpcServer

    server = GrpcServer(classifier, settings, metrics, bodies)
    await server.start(settings.grpc_port)
    return server


async def drain(app: FastAPI, timeout_s: float) -> None:
    """Graceful stop, first half: refuse new work and turn readiness 503 at once, then wait (at
    most ``timeout_s``) until every admitted request has its answer."""
    state = service_state(app)
    state.draining = True  # responses now carry Connection: close (RequestMiddleware)
    classifier = state.classifier
    if classifier is None:
        return
    classifier.begin_drain()
    await classifier.drain(timeout_s)
    log.info("drained")
