"""The error tree. Each class carries its HTTP status and a stable reason code, so one
exception handler renders every error as ``{"error": {"code": ..., "message": ...}}``.

    ImgclsError                      500 internal
    ├── BadImage                     400 bad_image            undecodable, truncated, corrupt
    ├── MalformedRequest             400 bad_request          not parseable as HTTP/1.1
    ├── Unauthorized                 401 unauthorized         no valid bearer token
    ├── NotFound                     404 not_found            no such route, model or version
    ├── MethodNotAllowed             405 method_not_allowed   carries Allow
    ├── RequestTimeout               408 request_timeout      head or body too slow; closes
    ├── ImageTooLarge                413 image_too_large      bytes or pixels over the limit
    ├── URITooLong                   414 uri_too_long         request target over the limit
    ├── UnsupportedMediaType         415 unsupported_media_type
    ├── InvalidParameter             422 invalid_parameter
    ├── HeadersTooLarge              431 headers_too_large    head bytes or header count
    ├── Unavailable                  503 (abstract)
    │   ├── Overloaded               503 overloaded           queue full; carries Retry-After
    │   ├── NotReady                 503 not_ready            model not loaded / warming up
    │   └── Draining                 503 draining             shutting down, admits nothing new
    ├── DeadlineExceeded             504 deadline_exceeded    request timeout passed
    └── InferenceFailed              500 inference_failed     the runner raised for this batch

``code`` values double as the bounded ``reason`` label of the rejection metrics.

A 500 is the server's own failure, and its ``message`` may quote an exception (ONNX Runtime's
text names nodes, shapes, paths): it is for the log only. ``caller_message`` is the one place
that rule lives: every transport tells the caller that, never ``message`` itself.
"""

from __future__ import annotations


class ImgclsError(Exception):
    status: int = 500
    code: str = "internal"
    public_message: str = "internal error"  # what a caller of a 500 is told instead of message

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def headers(self) -> dict[str, str]:
        """Extra response headers (Retry-After for 503s)."""
        return {}

    @property
    def hides_message(self) -> bool:
        """The server's own failure: its message is for the log only."""
        return self.status == 500

    def caller_message(self, request_id: str) -> str:
        """What the caller is told: the message, or for the server's own failure the fixed
        public message and the request id that finds the log lines."""
        if self.hides_message:
            return f"{self.public_message}; see server logs for request {request_id}"
        return self.message


class BadImage(ImgclsError):
    status = 400
    code = "bad_image"


class Unauthorized(ImgclsError):
    status = 401
    code = "unauthorized"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="imgcls"'}


class NotFound(ImgclsError):
    status = 404
    code = "not_found"


class MethodNotAllowed(ImgclsError):
    status = 405
    code = "method_not_allowed"

    def __init__(self, message: str, allow: str = "") -> None:
        super().__init__(message)
        self.allow = allow

    def headers(self) -> dict[str, str]:
        return {"Allow": self.allow} if self.allow else {}


class ImageTooLarge(ImgclsError):
    status = 413
    code = "image_too_large"


class UnsupportedMediaType(ImgclsError):
    status = 415
    code = "unsupported_media_type"


class InvalidParameter(ImgclsError):
    status = 422
    code = "invalid_parameter"


class Unavailable(ImgclsError):
    status = 503
    code = "unavailable"

    def __init__(self, message: str, retry_after_s: int | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        if self.retry_after_s is None:
            return {}
        return {"Retry-After": str(self.retry_after_s)}


class Overloaded(Unavailable):
    code = "overloaded"


class NotReady(Unavailable):
    code = "not_ready"


class Draining(Unavailable):
    code = "draining"


class DeadlineExceeded(ImgclsError):
    status = 504
    code = "deadline_exceeded"


class InferenceFailed(ImgclsError):
    status = 500
    code = "inference_failed"
    public_message = "inference failed"


# -- Connection-level refusals (service/server/protocol.py, service/http/uploads.py): the
# connection cannot carry another request after them, so each tells the client it closes.


class _Closes(ImgclsError):
    def headers(self) -> dict[str, str]:
        return {"Connection": "close"}


class MalformedRequest(_Closes):
    """The HTTP parser rejected the request (bad framing, a bad header); the connection
    closes."""

    status = 400
    code = "bad_request"


class RequestTimeout(_Closes):
    """A head not complete within IMGCLS_HTTP_HEAD_TIMEOUT_S, or a body silent for
    IMGCLS_BODY_IDLE_TIMEOUT_S or slower than IMGCLS_BODY_MIN_RATE_BYTES_PER_S."""

    status = 408
    code = "request_timeout"


class URITooLong(_Closes):
    """A request target over IMGCLS_HTTP_MAX_URL_BYTES."""

    status = 414
    code = "uri_too_long"


class HeadersTooLarge(_Closes):
    """A head over IMGCLS_HTTP_MAX_HEAD_BYTES or IMGCLS_HTTP_MAX_HEADERS fields."""

    status = 431
    code = "headers_too_large"
