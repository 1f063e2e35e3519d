"""The early refusals: the one admission decision (service/limits/admission.py), asked sooner.

An inference request the service would refuse now (overloaded, draining, not ready) gets the
503 its route would give (status, code, message, Retry-After, rejection metric, route template
in the access log) before routing, dependency injection or its upload; under overload most
arrivals are refused, and every refusal costs loop time the admitted requests need. Two doors
ask, both here and nowhere else, both off with IMGCLS_EARLY_REFUSAL=false (then every request
is routed, reads its body and is refused by its admission, the same answer, later):

- ``AdmissionDoor``, an ASGI middleware every server stack has;
- ``EarlyDoor``, asked by uvicorn's httptools protocol (service/server/protocol.py) when a
  head is parsed: it refuses overload before an ASGI task exists, and gives a request it lets
  in a Ticket, which holds a place only once the body is complete (never while it uploads).

Neither takes a place for a refusal or a request still arriving: they only check.
docs/decisions/protocol-door.md has the measurements.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Protocol

from fastapi import FastAPI
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from service.errors import Overloaded, Unavailable
from service.http.auth import admits
from service.http.error_shapes import Shape, error_response, shape_for
from service.http.state import service_state
from service.limits.admission import Ticket
from service.observability.metrics import Metrics
from service.security import Tokens

# Path -> the route template the metrics and the access log use for it.
_V1 = {"/v1/classify": "/v1/classify", "/v1/classify/batch": "/v1/classify/batch"}
_V2_INFER = re.compile(r"/v2/models/[^/]+(/versions/[^/]+)?/infer")


class Admits(Protocol):
    def check_admission(self) -> None: ...

    def ticket(self) -> Ticket: ...


def _template(path: str) -> str | None:
    if path in _V1:
        return _V1[path]
    if match := _V2_INFER.fullmatch(path):
        return "/v2/models/{model}" + ("/versions/{version}" if match[1] else "") + "/infer"
    return None


class RouteTemplate:
    """Stands in for the route object the router would have put in the scope."""

    def __init__(self, path: str) -> None:
        self.path = path


@dataclass(frozen=True, slots=True)
class Rendered:
    """A refusal's body and headers, as bytes on the wire."""

    body: bytes
    headers: tuple[tuple[bytes, bytes], ...]


@dataclass(frozen=True, slots=True)
class Refusal:
    template: str  # the refused route's template, for the metrics and the access log
    error: Unavailable

    def response(self) -> JSONResponse:
        return _response(self._key())

    def rendered(self) -> Rendered:
        """The response as bytes, rendered once per distinct refusal: under overload the same
        few (a message per in-flight count at the limit, a Retry-After per drain rate) repeat
        hundreds of times a second, and building the JSONResponse was a tenth of the event
        loop's time per refusal (py-spy, every request refused)."""
        return _rendered(self._key())

    def _key(self) -> _Key:
        error = self.error
        return shape_for(self.template), type(error), error.message, error.retry_after_s


# (error shape, error class, message, Retry-After): all a refusal's answer is.
_Key = tuple[Shape, type[Unavailable], str, int | None]


def _response(key: _Key) -> JSONResponse:
    shape, kind, message, retry_after_s = key
    return error_response(kind(message, retry_after_s), shape, request_id="-")


@functools.lru_cache(maxsize=256)
def _rendered(key: _Key) -> Rendered:
    response = _response(key)
    return Rendered(bytes(response.body), tuple(response.raw_headers))


def refusal(classifier: Admits | None, method: str, path: str) -> Refusal | None:
    """The refusal an inference request would get now, or None (admitted, not an inference
    route, or no classifier yet)."""
    if method != "POST" or classifier is None or (template := _template(path)) is None:
        return None
    try:
        classifier.check_admission()
    except Unavailable as refused:
        return Refusal(template, refused)
    return None


class AdmissionDoor:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            classifier = service_state(scope["app"]).classifier
            if (refused := refusal(classifier, scope["method"], scope["path"])) is not None:
                scope["route"] = RouteTemplate(refused.template)
                self.metrics.rejections.labels(reason=refused.error.code).inc()
                await refused.response()(scope, receive, send)
                return
        await self.app(scope, receive, send)


class EarlyDoor:
    """What the HTTP protocol decides when a head is parsed, for an inference request the app's
    own layers would treat the same way: refuse it (overload), or let it in with a Ticket.
    Everything else goes to the app as it is: draining and not-ready refusals (rare, and the
    drain's ``Connection: close`` belongs to the request middleware), requests without a valid
    token (the app's 401 comes first), browser requests under CORS (the CORS middleware adds
    its headers)."""

    def __init__(self, app: FastAPI, metrics: Metrics, tokens: Tokens | None, cors: bool) -> None:
        self.app = app
        self.metrics = metrics
        self.tokens = tokens  # every inference route needs a token when tokens are configured
        self.cors = cors

    def decide(self, scope: Scope) -> Refusal | Ticket | None:
        classifier: Admits | None = service_state(self.app).classifier
        if scope["method"] != "POST" or classifier is None:
            return None
        if (template := _template(scope["path"])) is None:
            return None
        if self.cors and any(name == b"origin" for name, _ in scope["headers"]):
            return None
        if self.tokens is not None and not admits(self.tokens, scope):
            return None
        try:
            classifier.check_admission()
        except Overloaded as refused:
            return Refusal(template, refused)
        except Unavailable:
            return None
        return classifier.ticket()
