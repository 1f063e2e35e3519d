"""In-process app fixtures: the real app (create_app) with its lifespan run, reached through
httpx.ASGITransport. ``serve`` builds one per test (fakes, special settings); ``real`` is one
app on the real EfficientNet-Lite0 model shared by a test module."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from service.app import create_app
from service.http.state import service_state
from service.observability.metrics import Metrics
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
