"""The error tree. Each class carries its HTTP status and a stable reason code, so one
exception handler renders every error as ``{"error": {"code": ..., "message": ...}}``.

    ImgclsError                      500 internal
    ├── BadImage                     400 bad_image            undecodable, truncated, corrupt
    ├── ImageTooLarge                413 image_too_large      bytes or pixels over the limit
    ├── UnsupportedMediaType         415 unsupported_media_type
    ├── InvalidParameter             422 invalid_parameter
    ├── Unavailable                  503 (abstract)
    │   ├── Overloaded               503 overloaded           queue full; carries Retry-After
    │   ├── NotReady                 503 not_ready            model not loaded / warming up
    │   └── Draining                 503 draining             shutting down, admits nothing new
    ├── DeadlineExceeded             504 deadline_exceeded    request timeout passed
    └── InferenceFailed              500 inference_failed     the runner raised for this batch

``code`` values double as the bounded ``reason`` label of the rejection metrics.

A 500 is the server's own failure, and its ``message`` may quote an exception (ONNX Runtime's
text names nodes, shapes, paths): it is for the log only. The caller is told the class's fixed
``public_message`` and the request id to find the log lines by (service/api/errors.py).
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


class BadImage(ImgclsError):
    status = 400
    code = "bad_image"


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
