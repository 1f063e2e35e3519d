"""Tensor values as the protocol carries them, both ways, for both transports:

- raw bytes (REST's binary tensor extension, gRPC's raw_input_contents/raw_output_contents):
  numeric tensors little-endian row-major; BYTES as each element's 4-byte little-endian length
  followed by its bytes;
- JSON lists (REST): numbers flat or nested row-major; BYTES input elements are base64 strings
  (an image is not text, and JSON strings must be), BYTES output elements are UTF-8 strings
  (the classification extension's "score:index:label").

A tensor's values are a numpy array of its shape (numeric) or a flat list of bytes (BYTES).

A caller's data is counted against the shape before any value is built, so a body that claims
a small tensor and carries a huge one costs its own bytes, not millions of Python objects:
JSON numbers are counted from the text, raw BYTES stop at the first element too many, and large
decodes go a slice at a time (a parse in a worker thread then lets the event loop in between).
"""

from __future__ import annotations

import base64
import binascii
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt

from service.errors import InvalidParameter

BYTES = "BYTES"
# The protocol's numeric datatypes (BF16 has no numpy type and is never accepted here).
NUMERIC: dict[str, np.dtype[Any]] = {
    name: np.dtype(kind).newbyteorder("<")
    for name, kind in {
        "BOOL": np.bool_,
        "UINT8": np.uint8,
        "UINT16": np.uint16,
        "UINT32": np.uint32,
        "UINT64": np.uint64,
        "INT8": np.int8,
        "INT16": np.int16,
        "INT32": np.int32,
        "INT64": np.int64,
        "FP16": np.float16,
        "FP32": np.float32,
        "FP64": np.float64,
    }.items()
}
DATATYPES = frozenset({*NUMERIC, BYTES, "BF16"})
_LENGTH = struct.Struct("<I")
# What JSON data may hold besides numbers and commas (removed before counting), and the bytes
# a JSON number is made of.
_JSON_LAYOUT = b"[] \t\r\n"
_NUMBER_BYTES = b"0123456789+-.eE,"
# JSON text decoded per slice (~60 k numbers, a few ms), and gRPC values converted per slice.
_SLICE_BYTES = 256 * 1024
_SLICE_VALUES = 65536

Values = npt.NDArray[Any] | list[bytes]


@dataclass(frozen=True, slots=True)
class Tensor:
    name: str
    datatype: str
    shape: tuple[int, ...]
    values: Values  # numeric: an array of ``shape``; BYTES: the flat list of elements


def element_count(shape: Sequence[int]) -> int:
    return math.prod(shape)


def check_header(name: str, datatype: str, shape: Sequence[int]) -> tuple[int, ...]:
    if datatype not in DATATYPES:
        raise InvalidParameter(f"input {name!r}: unknown datatype {datatype!r}")
    if any(dim < 0 for dim in shape):
        raise InvalidParameter(f"input {name!r}: negative dimension in shape {list(shape)}")
    return tuple(shape)


def from_raw(name: str, datatype: str, shape: tuple[int, ...], raw: bytes | memoryview) -> Values:
    count = element_count(shape)
    if datatype == BYTES:
        elements = deserialize_bytes(name, raw, count)
        if len(elements) != count:
            raise InvalidParameter(
                f"input {name!r}: {len(elements)} BYTES elements for shape {list(shape)}"
            )
        return elements
    dtype = _numeric(name, datatype)
    if len(raw) != count * dtype.itemsize:
        raise InvalidParameter(
            f"input {name!r}: {len(raw)} bytes of data; shape {list(shape)} of {datatype} "
            f"takes {count * dtype.itemsize}"
        )
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


def from_json(name: str, datatype: str, shape: tuple[int, ...], data: bytes) -> Values:
    """``data``: the JSON text of an input's data (valid JSON: the caller parsed around it),
    numbers or base64 strings, flat or nested row-major."""
    if not data.lstrip(b" \t\r\n").startswith(b"["):
        raise InvalidParameter(f"input {name!r}: data must be a JSON list")
    if datatype == BYTES:
        return _json_strings(name, shape, data)
    _numeric(name, datatype)  # an unknown numeric datatype is refused before any parsing
    flat = data.translate(None, _JSON_LAYOUT)
    if datatype == "BOOL":
        flat = flat.replace(b"true", b"1").replace(b"false", b"0")
    if flat.translate(None, _NUMBER_BYTES):  # strings, objects, null: not numbers
        raise InvalidParameter(f"input {name!r}: data must be {datatype} numbers")
    found = flat.count(b",") + 1 if flat else 0
    if found != element_count(shape):
        raise InvalidParameter(f"input {name!r}: {found} values for shape {list(shape)}")
    return _typed(name, datatype, shape, _json_numbers(name, datatype, flat, found))


def from_values(name: str, datatype: str, shape: tuple[int, ...], values: Sequence[Any]) -> Values:
    """Numbers already parsed (gRPC's typed contents fields), counted before they are copied."""
    count = element_count(shape)
    if len(values) != count:
        raise InvalidParameter(f"input {name!r}: {len(values)} values for shape {list(shape)}")
    wide = np.empty(count, dtype=np.float64)
    for start in range(0, count, _SLICE_VALUES):
        try:
            wide[start : start + _SLICE_VALUES] = values[start : start + _SLICE_VALUES]
        except (ValueError, TypeError, OverflowError):
            raise InvalidParameter(f"input {name!r}: data must be {datatype} numbers") from None
    return _typed(name, datatype, shape, wide)


def to_raw(tensor: Tensor) -> bytes:
    if isinstance(tensor.values, list):
        return serialize_bytes(tensor.values)
    return np.ascontiguousarray(tensor.values, dtype=NUMERIC[tensor.datatype]).tobytes()


def to_json(tensor: Tensor) -> list[Any]:
    if isinstance(tensor.values, list):
        return [element.decode("utf-8", "replace") for element in tensor.values]
    flat: list[Any] = tensor.values.ravel().tolist()
    return flat


def serialize_bytes(elements: Sequence[bytes]) -> bytes:
    return b"".join(_LENGTH.pack(len(element)) + element for element in elements)


def deserialize_bytes(name: str, raw: bytes | memoryview, limit: int | None = None) -> list[bytes]:
    """Length-prefixed elements; more than ``limit`` of them is refused at the first extra one
    (four zero bytes are an element: 60 MB of zeros would be 15 million)."""
    elements: list[bytes] = []
    offset = 0
    while offset < len(raw):
        if limit is not None and len(elements) == limit:
            raise InvalidParameter(f"input {name!r}: more than {limit} BYTES elements")
        if offset + _LENGTH.size > len(raw):
            raise InvalidParameter(f"input {name!r}: BYTES data ends inside an element's length")
        (length,) = _LENGTH.unpack_from(raw, offset)
        offset += _LENGTH.size
        if offset + length > len(raw):
            raise InvalidParameter(f"input {name!r}: a BYTES element runs past the data's end")
        elements.append(bytes(raw[offset : offset + length]))
        offset += length
    return elements


def _numeric(name: str, datatype: str) -> np.dtype[Any]:
    dtype = NUMERIC.get(datatype)
    if dtype is None:
        raise InvalidParameter(f"input {name!r}: datatype {datatype} has no numeric form here")
    return dtype


def _typed(
    name: str, datatype: str, shape: tuple[int, ...], wide: npt.NDArray[np.float64]
) -> Values:
    dtype = _numeric(name, datatype)
    if dtype.kind in "iu" and wide.size and not _fits(wide, dtype):
        raise InvalidParameter(f"input {name!r}: every value must be a {datatype} integer")
    return wide.reshape(shape).astype(dtype)


def _fits(values: npt.NDArray[np.float64], dtype: np.dtype[Any]) -> bool:
    info = np.iinfo(dtype)
    integral = bool(np.all(np.floor(values) == values))
    return integral and bool(values.min() >= info.min and values.max() <= info.max)


def _json_numbers(name: str, datatype: str, flat: bytes, count: int) -> npt.NDArray[np.float64]:
    """``flat``: ``count`` JSON numbers separated by commas, decoded a slice at a time."""
    wide = np.empty(count, dtype=np.float64)
    start = filled = 0
    while start < len(flat):
        end = flat.find(b",", start + _SLICE_BYTES)
        end = len(flat) if end < 0 else end
        try:
            values = msgspec.json.decode(b"[" + flat[start:end] + b"]", type=list[float])
        except msgspec.MsgspecError:  # ",," from an empty nested list, or a number out of range
            raise InvalidParameter(f"input {name!r}: data must be {datatype} numbers") from None
        wide[filled : filled + len(values)] = values
        filled += len(values)
        start = end + 1
    return wide


def _json_strings(name: str, shape: tuple[int, ...], data: bytes) -> list[bytes]:
    """Base64 strings, flat or nested. A well-formed nesting of ``shape`` has count - 1 commas
    and at most ``_nested_arrays(shape)`` lists: beyond those the data holds more values than
    the shape, refused before any is built."""
    count = element_count(shape)
    arrays = data.count(b"[")
    if arrays > _nested_arrays(shape) or data.count(b",") >= count + arrays:
        raise InvalidParameter(f"input {name!r}: more elements than shape {list(shape)} holds")
    try:
        nested = msgspec.json.decode(data)
    except msgspec.MsgspecError:
        raise InvalidParameter(f"input {name!r}: data is not valid JSON") from None
    elements = [_b64(name, i, item) for i, item in enumerate(_flatten(name, [nested]))]
    if len(elements) != count:
        raise InvalidParameter(f"input {name!r}: {len(elements)} elements for shape {list(shape)}")
    return elements


def _nested_arrays(shape: tuple[int, ...]) -> int:
    """Lists in row-major nesting of ``shape``: one, plus one per index of each outer dimension."""
    return 1 + sum(math.prod(shape[:depth]) for depth in range(1, len(shape)))


def _flatten(name: str, data: list[Any]) -> list[Any]:
    flat: list[Any] = []
    for item in data:
        if isinstance(item, list):
            flat.extend(_flatten(name, item))
        else:
            flat.append(item)
    return flat


def _b64(name: str, index: int, item: Any) -> bytes:
    if not isinstance(item, str):
        raise InvalidParameter(f"input {name!r}: BYTES element {index} must be a base64 string")
    try:
        return base64.b64decode(item, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidParameter(
            f"input {name!r}: BYTES element {index} is not valid base64"
        ) from None
