"""Admission at the door: an inference request the service would refuse (overloaded, draining,
not ready) gets its 503 here, before routing, dependency injection, the body or any parsing.

Under overload most arrivals are refused, and every refusal costs the event loop time that the
admitted requests need. The routes check admission before reading the body too (what a route
alone could do); this answers the same refusal with a fraction of the loop's work: measured
with py-spy, FastAPI's routing, dependency resolution and exception handling were most of a
refusal's cost. The answer is the one the route would give: the same status, code, message
and Retry-After, counted in the same rejection metric, logged by the request middleware under
the route's template.
"""

from __future__ import annotations

import re

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from service.api.errors import error_response
from service.errors import Unavailable
from service.metrics import Metrics

# Path -> the route template the metrics and the access log use for it.
_V1 = {"/v1/classify": "/v1/classify", "/v1/classify/batch": "/v1/classify/batch"}
_V2_INFER = re.compile(r"/v2/models/[^/]+(/versions/[^/]+)?/infer")


def _template(path: str) -> str | None:
    if path in _V1:
        return _V1[path]
    if match := _V2_INFER.fullmatch(path):
        return "/v2/models/{model}" + ("/versions/{version}" if match[1] else "") + "/infer"
    return None


class _Template:
    """Stands in for the route object the router would have put in the scope."""

    def __init__(self, path: str) -> None:
        self.path = path


class AdmissionDoor:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            template = _template(scope["path"])
            classifier = getattr(scope["app"].state, "classifier", None)
            if template is not None and classifier is not None:
                try:
                    classifier.check_admission()
                except Unavailable as refused:
                    scope["route"] = _Template(template)
                    self.metrics.rejections.labels(reason=refused.code).inc()
                    await _answer(template, refused)(scope, receive, send)
                    return
        await self.app(scope, receive, send)


def _answer(template: str, refused: Unavailable) -> JSONResponse:
    if template.startswith("/v2"):  # the Open Inference Protocol's error shape
        return JSONResponse({"error": refused.message}, 503, refused.headers())
    return error_response(503, refused.code, refused.message, refused.headers())
