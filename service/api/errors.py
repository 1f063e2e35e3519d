"""Every error leaves as ``{"error": {"code": ..., "message": ...}}``: one handler for the
ImgclsError tree (status and headers come from the class), and adapters that put FastAPI's
validation errors and Starlette's 404/405 into the same shape. Unexpected exceptions are turned
into a 500 by the request middleware, which also logs their traceback.

A 500 ImgclsError (InferenceFailed) is the server's own failure: its message, which may quote an
ONNX Runtime exception, stays in the log, and the caller gets the class's fixed public message
with the request id to find those log lines by."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from service.api.context import get_request_id
from service.api.disconnect import ClientDisconnected
from service.errors import ImgclsError, Unavailable
from service.metrics import Metrics
from service.schemas import ErrorBody, ErrorDetail

log = logging.getLogger(__name__)

# nginx's convention for "client closed the request": nobody receives it, the access log shows it.
CLIENT_CLOSED_REQUEST = 499
_HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}


def openapi_errors(model: type[BaseModel], texts: Mapping[int, str]) -> dict[int | str, Any]:
    """The ``responses=`` of a route's OpenAPI entry: each status with its error body model."""
    return {status: {"model": model, "description": text} for status, text in texts.items()}


def error_response(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    body = ErrorBody(error=ErrorDetail(code=code, message=message))
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def _metrics(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


async def _imgcls_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ImgclsError)  # registered for this class only
    _metrics(request).rejections.labels(reason=exc.code).inc()
    message = exc.message
    if exc.status >= 500 and not isinstance(exc, Unavailable):
        # The log line carries the request id (logs.request_id_var); the traceback was logged
        # once where the failure was caught (the batcher, the classifier). A 503 (overloaded,
        # draining, not ready) is not logged beyond the access line: under overload that would
        # be a line per refusal, costing the loop time the admitted requests need; the
        # rejections metric counts them by reason.
        log.warning("%s: %s", exc.code, exc.message)
    if exc.status == 500:
        message = f"{exc.public_message}; see server logs for request {get_request_id(request)}"
    return error_response(exc.status, exc.code, message, exc.headers())


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    _metrics(request).rejections.labels(reason="invalid_parameter").inc()
    return error_response(422, "invalid_parameter", _describe_validation(exc))


def _describe_validation(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error.get("loc", ()) if part != "query")
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    return error_response(exc.status_code, code, str(exc.detail), exc.headers)


async def _client_disconnected(request: Request, exc: Exception) -> JSONResponse:
    """The caller went away: while its images waited (ClientDisconnected), or mid-upload
    (Starlette's ClientDisconnect from the body stream). Neither is the server's failure, so
    neither may count as a 500: a flaky network would inflate the 5xx rate alerts watch."""
    _metrics(request).rejections.labels(reason="client_disconnected").inc()
    if isinstance(exc, ClientDisconnect):
        log.info("client disconnected during its upload; nothing was queued")
        message = "the client disconnected before its request body was complete"
    else:
        log.info("client disconnected while waiting; its work was cancelled")
        message = str(exc)
    # Nobody receives this body (the server drops a send to a closed connection); the status
    # is for the access log and the request metrics.
    return error_response(CLIENT_CLOSED_REQUEST, "client_disconnected", message)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ImgclsError, _imgcls_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(ClientDisconnected, _client_disconnected)
    app.add_exception_handler(ClientDisconnect, _client_disconnected)
