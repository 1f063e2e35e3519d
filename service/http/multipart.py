"""A multipart/form-data body already in memory -> the file parts of one field, each copied
once out of the body.

python-multipart finds the boundaries (with bytes.find) and reports each part's data as offsets
into the body; a part is then one slice of it. Starlette's form parser, used before, copied
every part into a SpooledTemporaryFile that rolls over to a file on disk past 1 MB, then read it
back through the thread pool: four copies, a temporary file and two thread hops per photo.

Invariants: only parts that end at a boundary count (a truncated body is malformed); parts of
other fields are skipped without being copied; at most MAX_PARTS parts are parsed, and
python-multipart bounds each part's headers (8 headers, 4 KiB each).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

MAX_PARTS = 1000  # Starlette's limit on files and on fields


class MalformedMultipart(ValueError):
    """The body is not multipart/form-data as its Content-Type announces."""


@dataclass(frozen=True, slots=True)
class FilePart:
    data: bytes
    content_type: str | None  # the part's own Content-Type, None when it has none


@dataclass(slots=True)
class _Part:
    headers: dict[bytes, bytes] = field(default_factory=dict)
    wanted: bool = False  # a part of the field asked for: its data is kept
    is_file: bool = False
    pieces: list[bytes | tuple[int, int]] = field(default_factory=list)  # (start, end): body's


class _Collector:
    """python-multipart's callbacks: headers per part, and the wanted parts' data as offsets."""

    def __init__(self, body: bytes, name: bytes) -> None:
        self.body, self.name = body, name
        self.parts: list[_Part] = []  # the wanted ones, in order
        self.ended = False
        self._part = _Part()
        self._count = 0
        self._header = [b"", b""]

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": self._begin,
            "on_header_field": lambda data, start, end: self._add_header(0, data[start:end]),
            "on_header_value": lambda data, start, end: self._add_header(1, data[start:end]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._data,
            "on_part_end": self._end,
            "on_end": self._finished,
        }

    def _begin(self) -> None:
        self._count += 1
        if self._count > MAX_PARTS:
            raise MalformedMultipart(f"more than {MAX_PARTS} parts")
        self._part = _Part()

    def _add_header(self, which: int, text: bytes) -> None:
        self._header[which] += text

    def _header_end(self) -> None:
        self._part.headers[self._header[0].lower()] = self._header[1]
        self._header = [b"", b""]

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._part.headers.get(b"content-disposition"))
        if b"name" not in options:
            raise MalformedMultipart('a part has no Content-Disposition "name"')
        self._part.wanted = options[b"name"] == self.name
        self._part.is_file = b"filename" in options

    def _data(self, data: bytes, start: int, end: int) -> None:
        if not self._part.wanted:
            return
        # Offsets when python-multipart hands us the body itself (always, for one write);
        # a copy of anything else (a buffer of its own that it may reuse).
        self._part.pieces.append((start, end) if data is self.body else bytes(data[start:end]))

    def _end(self) -> None:
        if self._part.wanted:
            self.parts.append(self._part)

    def _finished(self) -> None:
        self.ended = True

    def data(self, part: _Part) -> bytes:
        if len(part.pieces) == 1 and isinstance(part.pieces[0], tuple):
            start, end = part.pieces[0]
            return self.body[start:end]  # the one copy
        return b"".join(self.body[p[0] : p[1]] if isinstance(p, tuple) else p for p in part.pieces)


def file_parts(content_type: str, body: bytes, name: str) -> list[FilePart | None]:
    """The parts named ``name``, in order: a FilePart each, or None for a text value (a part
    without a filename). Raises MalformedMultipart."""
    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise MalformedMultipart("missing boundary in multipart")
    collector = _Collector(body, name.encode())
    try:
        parser = MultipartParser(boundary, collector.callbacks())
        parser.write(body)
        parser.finalize()
    except MultipartParseError as exc:
        raise MalformedMultipart(f"invalid multipart data: {exc}") from None
    if not collector.ended:
        raise MalformedMultipart("the body ends before the closing boundary")
    return [_file(collector, part) for part in collector.parts]


def _file(collector: _Collector, part: _Part) -> FilePart | None:
    if not part.is_file:
        return None
    declared = part.headers.get(b"content-type")
    content_type = None if declared is None else declared.decode("latin-1")
    return FilePart(collector.data(part), content_type)
