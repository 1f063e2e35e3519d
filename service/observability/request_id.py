"""A request's id: the caller's ``X-Request-ID`` (HTTP header or gRPC metadata) when it is safe
to echo in a header and a log line, else a fresh one."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable

# Echo only ids that are safe in a header and a log line, and short enough not to be abuse.
_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


def request_id_from(headers: Iterable[tuple[bytes, bytes]]) -> str:
    """``headers``: (lower-case name, value) pairs, as an ASGI scope carries them."""
    for name, value in headers:
        if name == b"x-request-id":
            candidate = value.decode("latin-1")
            if _VALID_REQUEST_ID.fullmatch(candidate):
                return candidate
    return uuid.uuid4().hex
