"""Per-request facts the routes hand to the middleware (which writes the Server-Timing header
and the access log after the route returns). They live in the ASGI scope's ``state`` dict, the
one place both a Request and a raw ASGI middleware can see."""

from __future__ import annotations

from starlette.requests import Request
from starlette.types import Scope

from service.observability.timing import Timing

_TIMING = "imgcls_timing"
_REQUEST_ID = "imgcls_request_id"


def set_timing(request: Request, timing: Timing) -> None:
    request.scope.setdefault("state", {})[_TIMING] = timing


def get_timing(scope: Scope) -> Timing | None:
    timing: Timing | None = scope.get("state", {}).get(_TIMING)
    return timing


def set_request_id(scope: Scope, request_id: str) -> None:
    scope.setdefault("state", {})[_REQUEST_ID] = request_id


def get_request_id(request: Request) -> str:
    request_id: str = request.scope.get("state", {}).get(_REQUEST_ID, "-")
    return request_id
