"""The tensor codec alone: raw bytes and JSON lists, both ways, and the errors for bad data."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from service.errors import InvalidParameter
from service.oip import tensors
from service.oip.tensors import Tensor


def test_numeric_raw_round_trip() -> None:
    pixels = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    tensor = Tensor("x", "UINT8", (2, 3, 4), pixels)
    decoded = tensors.from_raw("x", "UINT8", (2, 3, 4), tensors.to_raw(tensor))
    assert isinstance(decoded, np.ndarray)
    np.testing.assert_array_equal(decoded, pixels)


def test_bytes_raw_round_trip_uses_length_prefixes() -> None:
    elements = [b"", b"abc", bytes(range(256))]
    raw = tensors.serialize_bytes(elements)
    assert raw[:4] == b"\x00\x00\x00\x00"
    assert raw[4:8] == b"\x03\x00\x00\x00"
    assert tensors.from_raw("x", "BYTES", (3,), raw) == elements


def test_json_numbers_flat_or_nested() -> None:
    flat = tensors.from_json("x", "UINT8", (2, 2), b"[1, 2, 3, 4]")
    nested = tensors.from_json("x", "UINT8", (2, 2), b"[[1, 2],\n [3, 4]]")
    assert isinstance(flat, np.ndarray)
    assert isinstance(nested, np.ndarray)
    np.testing.assert_array_equal(flat, nested)
    assert flat.dtype == np.uint8


def test_json_bytes_are_base64() -> None:
    data = json.dumps([base64.b64encode(b"\xff\xd8 not utf-8").decode()]).encode()
    assert tensors.from_json("x", "BYTES", (1,), data) == [b"\xff\xd8 not utf-8"]


def test_json_output_of_bytes_is_text_and_of_numbers_a_flat_list() -> None:
    words = Tensor("c", "BYTES", (1, 1), [b"0.5:3:tabby"])
    assert tensors.to_json(words) == ["0.5:3:tabby"]
    numbers = Tensor("l", "FP32", (1, 2), np.array([[0.5, -1.0]], dtype=np.float32))
    assert tensors.to_json(numbers) == [0.5, -1.0]


@pytest.mark.parametrize(
    ("datatype", "shape", "data", "message"),
    [
        ("UINT8", (2,), [1, 2, 3], "3 values for shape \\[2\\]"),
        ("UINT8", (1,), [256], "UINT8 integer"),
        ("UINT8", (1,), [1.5], "UINT8 integer"),
        ("UINT8", (1,), ["a"], "must be UINT8 numbers"),
        ("BYTES", (1,), ["not base64!"], "not valid base64"),
        ("BYTES", (1,), [3], "base64 string"),
        ("BYTES", (2,), ["AAAA"], "1 elements for shape \\[2\\]"),
    ],
)
def test_bad_json_data_is_invalid(
    datatype: str, shape: tuple[int, ...], data: list[object], message: str
) -> None:
    with pytest.raises(InvalidParameter, match=message):
        tensors.from_json("x", datatype, shape, json.dumps(data).encode())


@pytest.mark.parametrize(
    ("datatype", "shape", "raw", "message"),
    [
        ("UINT8", (2, 2), b"\x00" * 3, "3 bytes of data; shape \\[2, 2\\] of UINT8 takes 4"),
        ("FP32", (1,), b"\x00" * 3, "takes 4"),
        ("BYTES", (1,), b"\x05\x00\x00\x00ab", "runs past"),
        ("BYTES", (1,), b"\x05\x00", "inside an element's length"),
        ("BYTES", (2,), tensors.serialize_bytes([b"a"]), "1 BYTES elements for shape \\[2\\]"),
    ],
)
def test_bad_raw_data_is_invalid(
    datatype: str, shape: tuple[int, ...], raw: bytes, message: str
) -> None:
    with pytest.raises(InvalidParameter, match=message):
        tensors.from_raw("x", datatype, shape, raw)


def test_unknown_datatype_and_negative_dimensions() -> None:
    with pytest.raises(InvalidParameter, match="unknown datatype"):
        tensors.check_header("x", "UINT9", [1])
    with pytest.raises(InvalidParameter, match="negative"):
        tensors.check_header("x", "UINT8", [-1, 3])


def test_json_values_are_counted_from_the_text_before_any_is_built(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A count that does not match the shape is refused before the numbers are decoded."""
    monkeypatch.setattr(tensors.msgspec.json, "decode", lambda *a, **k: pytest.fail("decoded"))
    with pytest.raises(InvalidParameter, match="5000000 values for shape \\[2, 2\\]"):
        tensors.from_json("x", "UINT8", (2, 2), b"[" + b",".join([b"0"] * 5_000_000) + b"]")


@pytest.mark.parametrize(
    ("datatype", "shape", "data", "message"),
    [
        ("UINT8", (2,), b'"12"', "must be a JSON list"),
        ("UINT8", (2,), b"[1, null]", "must be UINT8 numbers"),
        ("UINT8", (2,), b'[1, "2"]', "must be UINT8 numbers"),
        ("UINT8", (3,), b"[1, [], 2]", "must be UINT8 numbers"),
        ("BYTES", (2,), b'[[""], [""], [""]]', "more elements than shape \\[2\\] holds"),
        ("BYTES", (1,), b'["", "", ""]', "more elements than shape \\[1\\] holds"),
    ],
)
def test_json_data_that_is_not_what_the_shape_says(
    datatype: str, shape: tuple[int, ...], data: bytes, message: str
) -> None:
    with pytest.raises(InvalidParameter, match=message):
        tensors.from_json("x", datatype, shape, data)


def test_json_numbers_across_decode_slices() -> None:
    """More values than one slice decodes at once (256 KiB of text) keep their order."""
    values = [i % 256 for i in range(200_000)]
    decoded = tensors.from_json("x", "UINT8", (200_000,), json.dumps(values).encode())
    assert isinstance(decoded, np.ndarray)
    np.testing.assert_array_equal(decoded, np.array(values, dtype=np.uint8))


def test_raw_bytes_elements_stop_at_the_first_beyond_the_shape() -> None:
    with pytest.raises(InvalidParameter, match="more than 2 BYTES elements"):
        tensors.from_raw("x", "BYTES", (2,), bytes(4 * 1_000_000))


def test_typed_values_are_counted_before_they_are_copied() -> None:
    assert tensors.from_values("x", "UINT8", (2,), [3, 4]).tolist() == [3, 4]  # type: ignore[union-attr]
    with pytest.raises(InvalidParameter, match="3 values for shape \\[2\\]"):
        tensors.from_values("x", "UINT8", (2,), [1, 2, 3])
    with pytest.raises(InvalidParameter, match="UINT8 integer"):
        tensors.from_values("x", "UINT8", (1,), [300])
