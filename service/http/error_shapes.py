"""The HTTP API's two error shapes, rendered here and nowhere else:

    REST v1 and every other route   {"error": {"code": "...", "message": "..."}}
    the Open Inference Protocol      {"error": "<message>"}   (its routes, under /v2)

Which shape an answer takes depends on the request's path alone (``shape_for``), so the
exception handlers, the admission door, authentication and the middleware's last-resort 500 all
agree. The status and headers come from the error class; the protocol answers a malformed
request with 400 where the tree says 422. What the caller reads is ``caller_message``: a 500's
own text stays in the log."""

from __future__ import annotations

import enum
from typing import Any

from starlette.responses import JSONResponse

from service.errors import ImgclsError
from service.http.schemas import ErrorBody, ErrorDetail
from service.oip.schemas import ErrorResponse


class Shape(enum.Enum):
    V1 = "v1"
    OIP = "oip"


def shape_for(path: str) -> Shape:
    return Shape.OIP if path == "/v2" or path.startswith("/v2/") else Shape.V1


def status_for(exc: ImgclsError, shape: Shape) -> int:
    return 400 if shape is Shape.OIP and exc.status == 422 else exc.status


def error_body(exc: ImgclsError, shape: Shape, request_id: str) -> dict[str, Any]:
    message = exc.caller_message(request_id)
    if shape is Shape.OIP:
        return ErrorResponse(error=message).model_dump()
    return ErrorBody(error=ErrorDetail(code=exc.code, message=message)).model_dump()


def error_detail(exc: ImgclsError, request_id: str) -> ErrorDetail:
    """A v1 batch item's error: the same code and caller message as a whole answer's."""
    return ErrorDetail(code=exc.code, message=exc.caller_message(request_id))


def error_response(exc: ImgclsError, shape: Shape, request_id: str) -> JSONResponse:
    body = error_body(exc, shape, request_id)
    return JSONResponse(body, status_code=status_for(exc, shape), headers=exc.headers())
