"""The app's exception handlers: every error leaves in the shape its route speaks
(service/http/error_shapes.py), counted in imgcls_rejections_total by its code. FastAPI's
validation errors become InvalidParameter, Starlette's 404/405 NotFound/MethodNotAllowed, a
client that went away a 499 nobody receives. Unexpected exceptions become a 500 in the request
middleware, which logs their traceback."""

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

from service.errors import ImgclsError, InvalidParameter, MethodNotAllowed, NotFound, Unavailable
from service.http.context import get_request_id
from service.http.disconnect import ClientDisconnected
from service.http.error_shapes import error_response, shape_for
from service.http.state import service_state
from service.observability.tracing import note_error

log = logging.getLogger(__name__)

# nginx's convention for "client closed the request": nobody receives it, the access log shows it.
CLIENT_CLOSED_REQUEST = 499


class ClientClosedRequest(ImgclsError):
    status = CLIENT_CLOSED_REQUEST
    code = "client_disconnected"


def openapi_errors(model: type[BaseModel], texts: Mapping[int, str]) -> dict[int | str, Any]:
    """The ``responses=`` of a route's OpenAPI entry: each status with its error body model."""
    return {status: {"model": model, "description": text} for status, text in texts.items()}


def answer(request: Request, exc: ImgclsError) -> JSONResponse:
    """The error as this request's route shapes it, counted by its code."""
    service_state(request.app).metrics.rejections.labels(reason=exc.code).inc()
    note_error(exc.code, exc.status, exc.message)  # on the request's span, when traced
    if exc.status >= 500 and not isinstance(exc, Unavailable):
        # The log line carries the request id (logs.request_id_var); the traceback was logged
        # once where the failure was caught. A 503 is not logged beyond the access line: under
        # overload that would be a line per refusal; the rejections metric counts them.
        log.warning("%s: %s", exc.code, exc.message)
    return error_response(exc, shape_for(request.url.path), get_request_id(request))


async def _imgcls_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ImgclsError)  # registered for this class only
    return answer(request, exc)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return answer(request, InvalidParameter(_describe_validation(exc)))


def _describe_validation(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error.get("loc", ()) if part != "query")
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    error: ImgclsError
    if exc.status_code == 404:
        error = NotFound(str(exc.detail))
    elif exc.status_code == 405:
        error = MethodNotAllowed(str(exc.detail), (exc.headers or {}).get("Allow", ""))
    else:
        error = ImgclsError(str(exc.detail))
        error.status, error.code = exc.status_code, "http_error"
    return error_response(error, shape_for(request.url.path), get_request_id(request))


async def _client_disconnected(request: Request, exc: Exception) -> JSONResponse:
    """The caller went away: while its images waited (ClientDisconnected), or mid-upload
    (Starlette's ClientDisconnect from the body stream). Neither is the server's failure, so
    neither may count as a 500: a flaky network would inflate the 5xx rate alerts watch."""
    if isinstance(exc, ClientDisconnect):
        log.info("client disconnected during its upload; nothing was queued")
        message = "the client disconnected before its request body was complete"
    else:
        log.info("client disconnected while waiting; its work was cancelled")
        message = str(exc)
    # Nobody receives this body (the server drops a send to a closed connection); the status
    # is for the access log and the request metrics.
    return answer(request, ClientClosedRequest(message))


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ImgclsError, _imgcls_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(ClientDisconnected, _client_disconnected)
    app.add_exception_handler(ClientDisconnect, _client_disconnected)
