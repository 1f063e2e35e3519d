"""Answers the HTTP protocol writes itself (service/server/protocol.py), when there is no ASGI
task to give them: a head refused (414, 431, 400), too slow (408), or over the connection
cap (503). Each is the JSON error shape of its path (service/http/error_shapes.py), with the
headers every response gets (request id, Server-Timing, nosniff), counted in the same metrics
and written to the same access log as the app's own answers.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from starlette.datastructures import MutableHeaders
from starlette.types import Scope
from uvicorn.protocols.http.httptools_impl import STATUS_LINE

from service.errors import ImgclsError
from service.http.error_shapes import error_response, shape_for
from service.http.middleware import record, stamp
from service.observability.metrics import Metrics
from service.observability.timing import server_timing

# llhttp knows a fixed list of methods; anything else is counted under this one label, so a
# caller cannot mint metric series (OpenTelemetry's name for it).
OTHER_METHOD = "_OTHER"

# A request line with an RFC 9110 token for its method, and an origin-form target.
_REQUEST_LINE = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,32} (/[!-~]{0,8192}) HTTP/1\.[01]\r?\n")


def wire(
    error: ImgclsError,
    path: str,
    request_id: str,
    default_headers: Iterable[tuple[bytes, bytes]],
    elapsed_s: float,
) -> tuple[int, bytes]:
    """The status and the whole response, status line to body; it says the connection closes."""
    response = error_response(error, shape_for(path), request_id)
    headers = MutableHeaders(raw=[*default_headers, *response.raw_headers])
    stamp(headers, request_id, server_timing(None, elapsed_s))
    headers["connection"] = "close"  # the protocol closes after each of these
    head = b"".join(name + b": " + value + b"\r\n" for name, value in headers.raw)
    status = response.status_code
    return status, STATUS_LINE[status] + head + b"\r\n" + bytes(response.body)


def count(
    metrics: Metrics, scope: Scope, status: int, error: ImgclsError, elapsed_s: float
) -> None:
    """As the app counts and logs its answers: the request, its rejection reason, its log line."""
    metrics.rejections.labels(reason=error.code).inc()
    record(metrics, scope, status, elapsed_s, scope["state"]["imgcls_request_id"])


def scope_of(method: str, path: str, client: tuple[str, int] | None, request_id: str) -> Scope:
    """What ``record`` needs of a request that never became an ASGI scope."""
    return {
        "method": method,
        "path": path,
        "client": client,
        "state": {"imgcls_request_id": request_id},
    }


def request_target(data: bytes) -> bytes | None:
    """The target of the last request line in ``data`` whose method is a token: read back
    after llhttp refused the method (it knows a fixed list). None when there is none."""
    lines = list(_REQUEST_LINE.finditer(data))
    return lines[-1][1] if lines else None
