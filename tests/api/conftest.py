"""In-process app fixtures: the real app (create_app) with its lifespan run, reached through
httpx.ASGITransport. ``serve`` builds one per test (fakes, special settings); ``real`` is one
app on the real EfficientNet-Lite0 model shared by a test module; ``on_loopback`` puts an app
behind a real uvicorn server with the service's HTTP protocol, for what only a socket shows."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from starlette.types import ASGIApp

from service.app import create_app
from service.http.state import service_state
from service.observability.metrics import Metrics
from service.server.draining import _protocol
from service.settings import Settings
from tests.api.fakes import FakeClassifier


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class Served:
    app: FastAPI
    client: httpx.AsyncClient
    metrics: Metrics

    @property
    def classifier(self) -> Any:
        return service_state(self.app).classifier


@contextlib.asynccontextmanager
async def serve(
    settings: Settings,
    factory: Callable[[Settings, Metrics], Any] | None = None,
    *,
    wait_started: bool = True,
) -> AsyncIterator[Served]:
    metrics = Metrics()
    kwargs: dict[str, Any] = {} if factory is None else {"classifier_factory": factory}
    app = create_app(settings, metrics=metrics, **kwargs)
    async with app.router.lifespan_context(app):
        if wait_started:
            await service_state(app).start_task
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://imgcls") as client:
            yield Served(app, client, metrics)


@contextlib.asynccontextmanager
async def on_loopback(
    app: FastAPI, asgi: ASGIApp | None = None
) -> AsyncIterator[tuple[int, uvicorn.Server]]:
    """``app`` behind uvicorn with the service's httptools protocol, configured as build_server
    does, on a loopback port: its port and server once the model has started. ``asgi`` (a
    wrapper of ``app``) is what the server calls instead, e.g. to record what reaches the app."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        asgi or app,
        http=_protocol("httptools", app),
        lifespan="on",
        log_config=None,
        access_log=False,
        server_header=False,
        limit_concurrency=None,  # the protocol applies IMGCLS_HTTP_LIMIT_CONCURRENCY
        timeout_graceful_shutdown=2,  # a failed test's half-sent upload must not hold the stop
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(10):
            while not server.started:  # noqa: ASYNC110 (uvicorn offers no event to wait on)
                await asyncio.sleep(0.01)
            await service_state(app).start_task
        yield sock.getsockname()[1], server
    finally:
        server.should_exit = True
        await task
        sock.close()


def fake_factory(**kwargs: Any) -> Callable[[Settings, Metrics], FakeClassifier]:
    return lambda settings, metrics: FakeClassifier(settings, metrics, **kwargs)


@pytest.fixture(scope="module")
def real_settings(trained_model_dir: Path) -> Settings:
    return Settings(model_dir=trained_model_dir)


@pytest.fixture(scope="module")
async def real(real_settings: Settings) -> AsyncIterator[Served]:
    async with serve(real_settings) as served:
        if not served.classifier.readiness().ready:
            pytest.fail(f"the real model did not start: {served.classifier.readiness()}")
        yield served
