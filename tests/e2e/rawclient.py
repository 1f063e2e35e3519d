"""A raw HTTP/1.1 client for the hostile-client tests: what no well-behaved library will send
(stalled and trickling uploads, silent connections, oversized heads, unknown methods), with the
server's answer read as it comes."""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass
from typing import Any

from tests.e2e.conftest import ServiceProcess


@dataclass
class Answer:
    status: int | None  # None: the connection closed with no answer
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def address(server: ServiceProcess) -> tuple[str, int]:
    host, port = server.url.removeprefix("http://").split(":")
    return host, int(port)


def post_head(path: str, length: int, content_type: str = "image/jpeg") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: imgcls\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


async def read_answer(reader: asyncio.StreamReader) -> Answer:
    """One response, or Answer(None) if the connection ends (or is reset) before one."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return Answer(None, {}, b"")
    lines = head.decode("latin-1").split("\r\n")
    fields = (line.partition(":") for line in lines[1:] if line)
    headers = {name.strip().lower(): value.strip() for name, _, value in fields}
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return Answer(int(lines[0].split(" ")[1]), headers, body)


async def ends(reader: asyncio.StreamReader) -> bool:
    """True once the server has closed the connection (EOF or reset)."""
    with contextlib.suppress(ConnectionError):
        return await reader.read(65536) == b""
    return True


async def write_quietly(writer: asyncio.StreamWriter, data: bytes) -> bool:
    """Write, False if the server has closed the connection meanwhile. Yields to the loop
    each time, so that the answer is read while sending, as an HTTP client does."""
    try:
        writer.write(data)
        await writer.drain()
    except ConnectionError:
        return False
    await asyncio.sleep(0)
    return True
