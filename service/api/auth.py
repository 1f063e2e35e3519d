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
its count in imgcls_rejections_total{reason="unauthorized"}.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Callable
from pathlib import Path

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from service.api.errors import error_response
from service.metrics import Metrics
from service.settings import Settings

log = logging.getLogger(__name__)

_RELOAD_EVERY_S = 5.0
_PROBES = ("/livez", "/readyz", "/v2/health/")
_PUBLIC = ("/docs", "/redoc", "/openapi.json", "/static/")


class Tokens:
    """The accepted tokens: the setting's, plus the file's as it is now."""

    def __init__(self, fixed: list[str], file: Path | None) -> None:
        self._fixed = [t.encode() for t in fixed]
        self._file = file
        self._from_file: list[bytes] = []
        self._checked = float("-inf")
        self._mtime: float | None = None
        self.reload()

    @classmethod
    def from_settings(cls, settings: Settings) -> Tokens | None:
        fixed = settings.api_tokens.get_secret_value() if settings.api_tokens else ""
        tokens = cls([t.strip() for t in fixed.split(",") if t.strip()], settings.api_tokens_file)
        return tokens if tokens.configured else None

    @property
    def configured(self) -> bool:
        return bool(self._fixed or self._file is not None)

    def reload(self) -> None:
        """Read the file again if it changed. A missing or unreadable file keeps the tokens
        read last (a rotation half done must not lock everyone out), and says so."""
        self._checked = time.monotonic()
        if self._file is None:
            return
        try:
            mtime = self._file.stat().st_mtime
            if mtime == self._mtime:
                return
            lines = self._file.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            log.warning("cannot read the API tokens file %s: %s", self._file, exc)
            return
        self._mtime = mtime
        self._from_file = [
            line.strip().encode() for line in lines if line.strip() and not line.startswith("#")
        ]
        log.info("API tokens file read: %d tokens", len(self._from_file))

    def admits(self, scope: Scope) -> bool:
        """The request carries a bearer token that is accepted."""
        presented = _bearer(scope)
        return presented is not None and self.accepts(presented)

    def accepts(self, presented: bytes) -> bool:
        if time.monotonic() - self._checked > _RELOAD_EVERY_S:
            self.reload()
        found = False
        for token in self._fixed + self._from_file:
            found |= hmac.compare_digest(presented, token)
        return found


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
        if scope["type"] != "http" or scope["method"] == "OPTIONS" or not self.needs(scope["path"]):
            await self.app(scope, receive, send)  # (CORS preflights carry no credentials)
            return
        presented = _bearer(scope)
        if presented is not None and self.tokens.accepts(presented):
            await self.app(scope, receive, send)
            return
        self.metrics.rejections.labels(reason="unauthorized").inc()
        message = "a valid bearer token is required (Authorization: Bearer <token>)"
        if presented is not None:
            message = "the bearer token is not valid"
        headers = {"WWW-Authenticate": 'Bearer realm="imgcls"'}
        if scope["path"].startswith("/v2"):  # the Open Inference Protocol's error shape
            response = JSONResponse({"error": message}, status_code=401, headers=headers)
        else:
            response = error_response(401, "unauthorized", message, headers)
        await response(scope, receive, send)


def _bearer(scope: Scope) -> bytes | None:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, token = value.partition(b" ")
            if scheme.lower() == b"bearer" and token.strip():
                return bytes(token.strip())
    return None
