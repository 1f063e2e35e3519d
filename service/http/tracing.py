"""The server span of each inference request over HTTP (/v1/classify, /v1/classify/batch,
/v2/.../infer): installed only when tracing is on (service/observability/tracing.py), right
inside the request middleware, so its request id is known and a 401 or an early 503 is traced.

Named ``POST <route template>`` (bounded, as the metrics are), with the HTTP semantic
conventions' attributes kept small. Probes, metrics and pages are not traced. An exception that
escapes the app is recorded and the span marked failed; the caller's 500 is written outside.
"""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.http.context import get_timing
from service.http.door import inference_route
from service.observability.timing import cache_status
from service.observability.tracing import AttributeValue, RequestSpan, Tracing, note_exception


class TracingMiddleware:
    def __init__(self, app: ASGIApp, tracing: Tracing) -> None:
        self.app = app
        self.tracing = tracing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = inference_route(scope["path"]) if scope["type"] == "http" else None
        if route is None:
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        request = self.tracing.start(
            f"{method} {route}", scope["headers"], _attributes(scope, route)
        )
        status: int | None = None  # None: no answer sent (an exception, or cancelled)

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        with request.current():
            try:
                await self.app(scope, receive, sending)
            except Exception as exc:
                note_exception(exc)
                raise
            except asyncio.CancelledError:
                request.error("cancelled", server_fault=False)
                raise
            finally:
                _end(request, scope, status)


def _end(request: RequestSpan, scope: Scope, status: int | None) -> None:
    attributes: dict[str, AttributeValue] = {}
    if status is not None:
        attributes["http.response.status_code"] = status
    if (cached := cache_status(get_timing(scope))) is not None:  # the response cache is on
        attributes["http.response.header.cache-status"] = [cached]
    failed = str(status) if status is not None and status >= 500 else None
    request.end(attributes, failed)


def _attributes(scope: Scope, route: str) -> dict[str, str | int]:
    attributes: dict[str, str | int] = {
        "http.request.method": scope["method"],
        "http.route": route,
        "url.path": scope["path"],
        "url.scheme": scope.get("scheme", "http"),
        "network.protocol.version": scope.get("http_version", "1.1"),
    }
    if client := scope.get("client"):
        attributes["client.address"] = client[0]
    return attributes
