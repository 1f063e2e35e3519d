"""Optional bearer-token authentication, off unless tokens are configured.

Tokens come from IMGCLS_API_TOKENS (comma-separated) and/or IMGCLS_API_TOKENS_FILE (one per
line, ``#`` comments): several at once, so a token is rotated by adding the new one, moving
callers over, then removing the old. The file is read again when it changes (checked at most
every few seconds), so rotation needs no restart. A presented token is compared with every
configured one in constant time (hmac.compare_digest, no early exit), so response timing
says nothing about how much of a token was right.

What needs a token: the API (/v1, /v2 inference and metadata). What does not: the upload page
and its assets and the API docs (they hold no data; the page asks for a token when the API
answers 401), and, unless IMGCLS_AUTH_PROBES / IMGCLS_AUTH_METRICS say otherwise, the probes
(kubelets do not send tokens) and /metrics (a Prometheus scrape config can, when asked to).

Plain ASGI, inside the request middleware, so a 401 has a request id, an access-log line and
its count in imgcls_rejections_total{reason="unauthorized"}. Scopes other than HTTP are not let
through unchecked: a WebSocket needs a token whatever its path (closed with 1008 before it is
accepted, which the server answers 403), the lifespan passes, anything else is refused.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from starlette.types import ASGIApp, Receive, Scope, Send

from service.errors import Unauthorized
from service.http.error_shapes import error_response, shape_for
from service.observability.metrics import Metrics
from service.security import Tokens, bearer_token
from service.settings import Settings

log = logging.getLogger(__name__)

_PROBES = ("/livez", "/readyz", "/v2/health/")
_PUBLIC = ("/docs", "/redoc", "/openapi.json", "/static/")


def needs_token(settings: Settings) -> Callable[[str], bool]:
    def check(path: str) -> bool:
        if path == "/" or path.startswith(_PUBLIC):
            return False
        if path.startswith(_PROBES):
            return settings.auth_probes
        if path == "/metrics":
            return settings.auth_metrics
        return True

    return check


class BearerAuth:
    def __init__(
        self, app: ASGIApp, tokens: Tokens, needs: Callable[[str], bool], metrics: Metrics
    ) -> None:
        self.app = app
        self.tokens = tokens
        self.needs = needs
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self.app(scope, receive, send)
        elif kind == "http":
            await self._http(scope, receive, send)
        elif kind == "websocket" and admits(self.tokens, scope):
            await self.app(scope, receive, send)
        elif kind == "websocket":
            self.metrics.rejections.labels(reason=Unauthorized.code).inc()
            await send({"type": "websocket.close", "code": 1008})  # policy violation
        else:
            log.warning("refused an ASGI scope of type %r: this app serves HTTP only", kind)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] == "OPTIONS" or not self.needs(scope["path"]):
            await self.app(scope, receive, send)  # (CORS preflights carry no credentials)
            return
        presented = _bearer(scope)
        if presented is not None and self.tokens.accepts(presented):
            await self.app(scope, receive, send)
            return
        message = "a valid bearer token is required (Authorization: Bearer <token>)"
        if presented is not None:
            message = "the bearer token is not valid"
        error = Unauthorized(message)
        self.metrics.rejections.labels(reason=error.code).inc()
        response = error_response(error, shape_for(scope["path"]), request_id="-")
        await response(scope, receive, send)


def admits(tokens: Tokens, scope: Scope) -> bool:
    """The request carries a bearer token that is accepted."""
    presented = _bearer(scope)
    return presented is not None and tokens.accepts(presented)


def _bearer(scope: Scope) -> bytes | None:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            return bearer_token(value)
    return None
