"""The one request middleware (plain ASGI, so it neither buffers bodies nor breaks the
disconnect message the routes listen for). For every HTTP request it:

- gives it a request id (a valid incoming X-Request-ID, else a new one) for logs and the reply,
- adds ``X-Request-ID`` and ``Server-Timing`` headers to the response, ``Cache-Status`` when
  the response cache was asked, and ``Connection: close`` once the server drains,
- counts it in Prometheus by route TEMPLATE (``/v1/classify``, never the raw path: bounded),
- writes one access-log line, and
- turns any exception nothing else handled into a logged traceback and a JSON 500: the caller
  never sees a stack trace.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import ImgclsError
from service.http.context import get_timing, set_request_id
from service.http.error_shapes import error_response, shape_for
from service.http.state import service_state
from service.observability.logs import ACCESS_LOGGER, request_id_var
from service.observability.metrics import Metrics
from service.observability.request_id import request_id_from
from service.observability.timing import Timing, cache_status, server_timing

log = logging.getLogger(__name__)
access_log = logging.getLogger(ACCESS_LOGGER)

UNMATCHED_ROUTE = "unmatched"


def route_template(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED_ROUTE


@dataclass(slots=True)
class _Exchange:
    """What the middleware learns about one request while it runs."""

    request_id: str
    started: float
    status: int = 500
    response_started: bool = False


class RequestMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        exchange = _Exchange(request_id_from(scope["headers"]), time.perf_counter())
        set_request_id(scope, exchange.request_id)
        token = request_id_var.set(exchange.request_id)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                exchange.status = message["status"]
                exchange.response_started = True
                headers = MutableHeaders(scope=message)
                total = time.perf_counter() - exchange.started
                stamp(headers, exchange.request_id, server_timing(get_timing(scope), total))
                if (cached := cache_status(get_timing(scope))) is not None:
                    headers["Cache-Status"] = cached
                if service_state(scope["app"]).draining:
                    # Tell keep-alive clients to reconnect (elsewhere) instead of reusing a
                    # connection that will close once the drain ends (service/__main__.py).
                    headers["Connection"] = "close"
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except Exception:
            log.exception("unhandled error")  # the traceback, with the request id, in the log
            if exchange.response_started:
                raise  # too late for a clean answer: let the server drop the connection
            error = ImgclsError("unhandled error")  # its text: the log's traceback
            self.metrics.rejections.labels(reason=error.code).inc()
            response = error_response(error, shape_for(scope["path"]), exchange.request_id)
            await response(scope, receive, send_with_headers)
        finally:
            self._record(scope, exchange)
            request_id_var.reset(token)

    def _record(self, scope: Scope, exchange: _Exchange) -> None:
        duration = time.perf_counter() - exchange.started
        record(self.metrics, scope, exchange.status, duration, exchange.request_id)


def stamp(headers: MutableHeaders, request_id: str, timing: str) -> None:
    """The headers every response gets (service/server/protocol.py's too)."""
    headers["X-Request-ID"] = request_id
    headers.append("Server-Timing", timing)
    # Every body is JSON, text or a declared image type: never let a browser guess.
    headers["X-Content-Type-Options"] = "nosniff"


def record(metrics: Metrics, scope: Scope, status: int, duration: float, request_id: str) -> None:
    """Count one answered request in Prometheus and write its access-log line."""
    route = route_template(scope)
    method = scope["method"]
    metrics.requests.labels(route=route, method=method, status=str(status)).inc()
    metrics.request_duration.labels(route=route).observe(duration)
    timing = get_timing(scope)
    access_log.info(
        "%s %s %d",
        method,
        route,
        status,
        extra={
            "method": method,
            "route": route,
            "path": scope["path"],
            "status": status,
            "duration_ms": round(duration * 1e3, 3),
            "request_id": request_id,
            "batch_size": timing.batch_size if timing else None,
            "client": _client(scope),
        }
        | _cache_field(timing),
    )


def _cache_field(timing: Timing | None) -> dict[str, str]:
    """The access line's ``cache`` field (the Cache-Status value), only when the cache is on."""
    status = cache_status(timing)
    return {} if status is None else {"cache": status}


def _client(scope: Scope) -> str | None:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else None
