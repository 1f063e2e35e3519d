"""service.http.multipart: a multipart/form-data body in memory -> the file parts of one field,
each one slice of the body; malformed bodies refused with a reason. Bodies are written by
httpx's own multipart encoder, as a client would send them."""

from __future__ import annotations

import httpx
import pytest

from service.http.multipart import MAX_PARTS, FilePart, MalformedMultipart, file_parts


def encoded(files: list[tuple[str, tuple[str, bytes, str]]], data: dict[str, str] | None = None):
    request = httpx.Request("POST", "http://x/", files=files, data=data)
    return request.headers["content-type"], request.read()


def test_the_file_parts_of_the_field_in_order_with_their_media_types() -> None:
    jpeg, png = b"\xff\xd8 a jpeg \r\n--not-the-boundary\r\n", b"\x89PNG\r\n\x1a\n"
    content_type, body = encoded(
        [("files", ("a.jpg", jpeg, "image/jpeg")), ("other", ("x", b"skip", "text/plain")),
         ("files", ("b.png", png, "image/png"))],
        data={"note": "ignored"},
    )  # fmt: skip
    assert file_parts(content_type, body, "files") == [
        FilePart(jpeg, "image/jpeg"),
        FilePart(png, "image/png"),
    ]


def test_a_part_without_its_own_media_type_is_left_to_sniffing() -> None:
    boundary = "b0undary"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="x"\r\n\r\n'
        f"IMAGE\r\n--{boundary}--\r\n"
    ).encode()
    parts = file_parts(f"multipart/form-data; boundary={boundary}", body, "file")
    assert parts == [FilePart(b"IMAGE", None)]


def test_a_text_value_under_the_field_is_none_and_a_missing_field_is_empty() -> None:
    content_type, body = encoded([("other", ("a.jpg", b"x", "image/jpeg"))], data={"file": "t"})
    assert file_parts(content_type, body, "file") == [None]
    assert file_parts(content_type, body, "files") == []


def test_a_body_cut_before_its_closing_boundary_is_malformed() -> None:
    """A truncated upload is refused, not classified from its first bytes."""
    content_type, body = encoded([("file", ("a.jpg", b"\xff\xd8" + b"x" * 1000, "image/jpeg"))])
    with pytest.raises(MalformedMultipart, match="ends before the closing boundary"):
        file_parts(content_type, body[:600], "file")


@pytest.mark.parametrize(
    ("content_type", "body", "reason"),
    [
        ("multipart/form-data", b"--x\r\n", "missing boundary"),
        (
            "multipart/form-data; boundary=x",
            b'--x\r\nContent-Disposition: form-data\r\n\r\nv\r\n--x--\r\n',
            'no Content-Disposition "name"',
        ),
        ("multipart/form-data; boundary=x", b"--y\r\n\r\n", "invalid multipart data"),
    ],
)  # fmt: skip
def test_malformed_bodies_are_refused_with_a_reason(
    content_type: str, body: bytes, reason: str
) -> None:
    with pytest.raises(MalformedMultipart, match=reason):
        file_parts(content_type, body, "file")


def test_no_more_than_max_parts_are_parsed() -> None:
    part = b'--x\r\nContent-Disposition: form-data; name="n"\r\n\r\nv\r\n'
    body = part * (MAX_PARTS + 1) + b"--x--\r\n"
    with pytest.raises(MalformedMultipart, match=f"more than {MAX_PARTS} parts"):
        file_parts("multipart/form-data; boundary=x", body, "file")
    assert file_parts("multipart/form-data; boundary=x", part * MAX_PARTS + b"--x--\r\n", "n")
