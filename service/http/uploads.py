"""Request body -> image bytes, for the three ways a caller may send images:

- a raw body with ``Content-Type: image/*`` (or application/octet-stream: sniffed),
- ``multipart/form-data`` with the image in field ``file`` (batch: ``files``, repeated),
- ``application/json``: ``{"image": "<base64>"}`` (batch: ``{"images": [...]}``).

The body is read here, chunk by chunk, against a byte limit, a clock and the body budget: an
oversized upload is refused (413) as soon as its Content-Length or its running total passes the
limit, before the rest is read; one too slow gets 408 and its connection closes (as does one
evicted from a full body budget as too slow to finish: service/limits/body_budget.py).
FastAPI's own body and form parsing would read everything first.
"""

from __future__ import annotations

import asyncio
import binascii
import contextlib
from collections.abc import AsyncGenerator, MutableMapping
from dataclasses import dataclass
from typing import Any, TypeVar

import pybase64
from pydantic import ValidationError
from starlette.requests import Request

from service.errors import (
    ImageTooLarge,
    InvalidParameter,
    MalformedRequest,
    RequestTimeout,
    UnsupportedMediaType,
)
from service.http import multipart
from service.http.schemas import ClassifyBatchJSON, ClassifyJSON
from service.http.state import service_state
from service.limits.body_budget import BodyHold
from service.limits.body_clock import BodyClock
from service.observability.metrics import Metrics
from service.observability.tracing import traced
from service.settings import Settings

_Body = TypeVar("_Body", ClassifyJSON, ClassifyBatchJSON)

_ACCEPTED = (
    "send the image as a raw body with Content-Type image/*, as multipart/form-data "
    "(field 'file'; batch: 'files'), or as application/json {\"image\": \"<base64>\"}"
)


@dataclass(frozen=True, slots=True)
class Upload:
    data: bytes
    content_type: str | None  # as declared by the caller; None: sniff the bytes


@traced("read body")
async def read_body(request: Request, limit: int, hold: BodyHold) -> bytes:
    """The whole body, against its byte limit (413), its clock (408) and the body budget
    (service/limits/body_budget.py) through ``hold``: a declared length is taken before any of
    it is read (and may be evicted while it arrives: 408), a chunked body chunk by chunk."""
    declared = declared_length(request.headers.get("content-length"))
    eviction = _Eviction(service_state(request.app).metrics)
    if declared is not None:
        if declared > limit:
            raise ImageTooLarge(f"the request body is {declared} bytes; the limit is {limit}")
        hold.expect(declared, eviction.evict)  # the server reads no more than the declared length
        if request.scope.setdefault(_PARSED, hold) is True:  # all here, if not all read yet
            hold.arrived_all()
    chunks: list[bytes] = []
    size = 0
    async with contextlib.aclosing(_arriving(request, declared, eviction)) as arriving:
        async for chunk in arriving:
            size += len(chunk)
            if size > limit:  # chunked uploads announce no length: stop at the first chunk over
                raise ImageTooLarge(f"the request body exceeds the limit of {limit} bytes")
            if declared is None:
                hold.take(len(chunk))
            else:
                hold.arrived(len(chunk))
            chunks.append(chunk)
    hold.arrived_all()
    return b"".join(chunks)


# In a request's ASGI scope: the hold of its declared body while it arrives, True once the HTTP
# protocol has parsed its last byte. A complete body is never evicted, even one whose reader has
# not woken up to take its last chunk yet.
_PARSED = "imgcls.body_parsed"


def body_parsed(scope: MutableMapping[str, Any]) -> None:
    """Called by the HTTP protocol (service/server/protocol.py) when a request's last byte is
    parsed: its body, complete, can no longer be evicted from the budget."""
    hold = scope.get(_PARSED)
    scope[_PARSED] = True
    if isinstance(hold, BodyHold):
        hold.arrived_all()


def declared_length(value: str | None) -> int | None:
    """A Content-Length header's value, or None if there is none. ASCII digits only:
    ``str.isdigit()`` also accepts "²" and other scripts' digits, which ``int()`` then refuses
    or reads as a number. (The HTTP parser rejects such a header first; this does not rely on
    it.)"""
    if value is None:
        return None
    value = value.strip(" \t")
    if not (value.isascii() and value.isdigit()):
        raise MalformedRequest(f"invalid Content-Length {value[:32]!r}: expected ASCII digits")
    return int(value)


class _Eviction:
    """What the body budget tells a body's reader when it evicts the body: the reader's wait
    for the next chunk ends at once, and the body is answered 408 as too slow."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self.evicted = False
        self.waiting: asyncio.Timeout | None = None

    def evict(self) -> None:
        self.evicted = True
        if self.waiting is not None:
            self.waiting.reschedule(-1)  # in the past: the wait times out at the next turn

    def check(self, received: int, elapsed_s: float, declared: int | None) -> None:
        if self.evicted:
            self._metrics.body_evictions.inc()
            raise RequestTimeout(
                f"the request body arrived too slowly for a server whose body budget is full: "
                f"{received} of {declared} bytes in {elapsed_s:.1f} s; other requests need "
                "the memory it holds (IMGCLS_BODY_CONTENDED_FINISH_S)"
            )


async def _arriving(
    request: Request, declared: int | None, eviction: _Eviction
) -> AsyncGenerator[bytes, None]:
    """The body's chunks as they arrive, each within the body clock's deadline
    (service/limits/body_clock.py): a body too slow, or evicted from the body budget, ends in
    RequestTimeout, which closes the connection."""
    settings = service_state(request.app).settings
    loop = asyncio.get_running_loop()
    clock = BodyClock.start(
        settings.body_idle_timeout_s, settings.body_min_rate_bytes_per_s, loop.time()
    )
    chunks = request.stream()
    while True:
        eviction.check(clock.received, loop.time() - clock.started, declared)
        try:
            async with asyncio.timeout_at(clock.deadline()) as eviction.waiting:
                chunk = await anext(chunks)
        except StopAsyncIteration:
            return
        except TimeoutError:
            eviction.check(clock.received, loop.time() - clock.started, declared)
            raise RequestTimeout(
                f"the request body arrived too slowly: {clock.received} bytes in "
                f"{loop.time() - clock.started:.1f} s (at least {clock.min_rate_bytes_per_s} "
                f"bytes/s after the first {clock.idle_s:g} s, and a byte every "
                f"{clock.idle_s:g} s)"
            ) from None
        finally:
            eviction.waiting = None
        clock.arrived(len(chunk), loop.time())
        yield chunk


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


async def read_one(request: Request, settings: Settings, hold: BodyHold) -> Upload:
    """The single image of a /v1/classify request."""
    kind = media_type(request)
    if kind.startswith("image/") or kind == "application/octet-stream":
        raw = await read_body(request, settings.max_upload_bytes, hold)
        return Upload(raw, request.headers.get("content-type"))
    body = await read_body(request, settings.max_single_body_bytes, hold)
    if kind == "multipart/form-data":
        uploads = await _multipart(request, body, "file")
        if len(uploads) != 1:
            raise InvalidParameter(f"expected one multipart field 'file', got {len(uploads)}")
        return _checked(uploads[0], settings)
    if kind == "application/json":
        image = _parse_json(ClassifyJSON, body).image
        return _checked(Upload(_b64decode(image, "image"), None), settings)
    raise UnsupportedMediaType(f"unsupported Content-Type {kind or '(none)'!r}: {_ACCEPTED}")


async def read_many(
    request: Request, settings: Settings, hold: BodyHold
) -> list[Upload | ImageTooLarge]:
    """The images of a /v1/classify/batch request, in order. An image over max_upload_bytes is
    returned as its error, so it fails alone."""
    kind = media_type(request)
    body = await read_body(request, settings.max_request_bytes, hold)
    if kind == "multipart/form-data":
        uploads = await _multipart(request, body, "files")
    elif kind == "application/json":
        images = _parse_json(ClassifyBatchJSON, body).images
        uploads = [Upload(_b64decode(b64, f"images[{i}]"), None) for i, b64 in enumerate(images)]
    else:
        raise UnsupportedMediaType(
            f"unsupported Content-Type {kind or '(none)'!r}: send multipart/form-data (field "
            '\'files\', repeated) or application/json {"images": ["<base64>", ...]}'
        )
    _check_count(len(uploads), settings.max_batch_images)
    return [_checked_or_error(upload, settings) for upload in uploads]


def _check_count(count: int, limit: int) -> None:
    if count == 0:
        raise InvalidParameter("the batch holds no images")
    if count > limit:
        raise InvalidParameter(f"the batch holds {count} images; the limit is {limit}")


def _checked(upload: Upload, settings: Settings) -> Upload:
    if len(upload.data) > settings.max_upload_bytes:
        raise ImageTooLarge(
            f"the image is {len(upload.data)} bytes; the limit is {settings.max_upload_bytes}"
        )
    return upload


def _checked_or_error(upload: Upload, settings: Settings) -> Upload | ImageTooLarge:
    try:
        return _checked(upload, settings)
    except ImageTooLarge as exc:
        return exc


def _parse_json(model: type[_Body], body: bytes) -> _Body:
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        raise InvalidParameter(f"invalid JSON body: {where}: {first['msg']}") from None


def _b64decode(text: bytes, where: str) -> bytes:
    """Standard base64, strictly (padding, no other character). pybase64 decodes with SIMD:
    ~0.1 ms per MB here, against ~5 for the standard library's a2b_base64."""
    try:
        return pybase64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidParameter(f"{where} is not valid base64") from None


async def _multipart(request: Request, body: bytes, field: str) -> list[Upload]:
    try:
        parts = multipart.file_parts(request.headers.get("content-type", ""), body, field)
    except multipart.MalformedMultipart as exc:
        raise InvalidParameter(f"malformed multipart body: {exc}") from None
    if not parts:
        raise InvalidParameter(f"the multipart body has no field {field!r}")
    if any(part is None for part in parts):
        raise InvalidParameter(f"multipart field {field!r} must be a file, not a text value")
    return [Upload(part.data, part.content_type) for part in parts if part is not None]
