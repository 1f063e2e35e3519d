"""Tensor values as the protocol carries them, both ways, for both transports:

- raw bytes (REST's binary tensor extension, gRPC's raw_input_contents/raw_output_contents):
  numeric tensors little-endian row-major; BYTES as each element's 4-byte little-endian length
  followed by its bytes;
- JSON lists (REST): numbers flat or nested row-major; BYTES input elements are base64 strings
  (an image is not text, and JSON strings must be), BYTES output elements are UTF-8 strings
  (the classification extension's "score:index:label").

A tensor's values are a numpy array of its shape (numeric) or a flat list of bytes (BYTES).
"""

from __future__ import annotations

import base64
import binascii
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

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


def from_raw(name: str, datatype: str, shape: tuple[int, ...], raw: bytes) -> Values:
    count = element_count(shape)
    if datatype == BYTES:
        elements = deserialize_bytes(name, raw)
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


def from_json(name: str, datatype: str, shape: tuple[int, ...], data: list[Any]) -> Values:
    if datatype == BYTES:
        elements = [_b64(name, i, item) for i, item in enumerate(_flatten(name, data))]
        if len(elements) != element_count(shape):
            raise InvalidParameter(
                f"input {name!r}: {len(elements)} elements for shape {list(shape)}"
            )
        return elements
    dtype = _numeric(name, datatype)
    try:
        wide = np.asarray(data, dtype=np.float64)
    except (ValueError, TypeError, OverflowError):
        raise InvalidParameter(f"input {name!r}: data must be {datatype} numbers") from None
    if wide.size != element_count(shape):
        raise InvalidParameter(f"input {name!r}: {wide.size} values for shape {list(shape)}")
    if dtype.kind in "iu" and wide.size and not _fits(wide, dtype):
        raise InvalidParameter(f"input {name!r}: every value must be a {datatype} integer")
    return wide.reshape(shape).astype(dtype)


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


def deserialize_bytes(name: str, raw: bytes) -> list[bytes]:
    elements = []
    offset = 0
    while offset < len(raw):
        if offset + _LENGTH.size > len(raw):
            raise InvalidParameter(f"input {name!r}: BYTES data ends inside an element's length")
        (length,) = _LENGTH.unpack_from(raw, offset)
        offset += _LENGTH.size
        if offset + length > len(raw):
            raise InvalidParameter(f"input {name!r}: a BYTES element runs past the data's end")
        elements.append(raw[offset : offset + length])
        offset += length
    return elements


def _numeric(name: str, datatype: str) -> np.dtype[Any]:
    dtype = NUMERIC.get(datatype)
    if dtype is None:
        raise InvalidParameter(f"input {name!r}: datatype {datatype} has no numeric form here")
    return dtype


def _fits(values: npt.NDArray[np.float64], dtype: np.dtype[Any]) -> bool:
    info = np.iinfo(dtype)
    integral = bool(np.all(np.floor(values) == values))
    return integral and bool(values.min() >= info.min and values.max() <= info.max)


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
