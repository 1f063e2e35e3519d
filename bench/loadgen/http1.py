"""The load generator's HTTP/1.1, written once: a request head, a response read back, and two
ways to use a connection. RawSender keeps connections alive and costs a few times less CPU per
request than httpx (it shares the server's 2 cores); ``exchange_once`` opens a connection per
request and can send a body in pauses, lie about its length or hang up (the soak's callers).
HttpxSender is the issue's reference client, for comparison."""

from __future__ import annotations

import asyncio
import time
import urllib.parse
from collections.abc import Mapping, Sequence

import httpx

from bench.loadgen.outcomes import Outcome

CLASSIFY_PATH = "/v1/classify"
HEADERS = {"content-type": "image/jpeg"}
ANSWER_TIMEOUT_S = 60.0  # six times the service's default deadline: an answer lost, not late

Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


def request_head(
    host: str,
    path: str,
    content_type: str,
    headers: Mapping[str, str] | None = None,
    close: bool = False,
) -> str:
    """A POST's head without its Content-Length line and the blank line that ends it
    (``head + content_length(n)`` completes it), so a sender builds it once."""
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}", f"Content-Type: {content_type}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    lines += ["Connection: close"] if close else []
    return "\r\n".join(lines) + "\r\n"


def content_length(length: int) -> str:
    return f"Content-Length: {length}\r\n\r\n"


async def read_response(reader: asyncio.StreamReader) -> tuple[str, int, dict[str, str]]:
    """A response's version, status and headers (names lower-cased), and its body read past."""
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    version, status = head[0].split(" ", 2)[:2]
    fields = (line.partition(":") for line in head[1:])
    headers = {name.strip().lower(): value.strip() for name, _, value in fields if name}
    await reader.readexactly(int(headers["content-length"]))
    return version, int(status), headers


def multipart(
    files: Sequence[bytes], field: str, boundary: str = "imgclsbench"
) -> tuple[bytes, str]:
    """A multipart/form-data body of JPEG files under one field name, and its Content-Type."""
    head = '--{}\r\nContent-Disposition: form-data; name="{}"; filename="{}.jpg"\r\n'
    head += "Content-Type: image/jpeg\r\n\r\n"
    parts = [head.format(boundary, field, i).encode() + f + b"\r\n" for i, f in enumerate(files)]
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


class RawSender:
    """A minimal HTTP/1.1 keep-alive client on asyncio streams, for when the client's own CPU
    matters: the head built once, no header objects. Reopens connections the server closes
    (Flask's development server answers HTTP/1.0: one connection per request)."""

    about = "a minimal asyncio HTTP/1.1 keep-alive client, a few times cheaper than httpx"

    def __init__(
        self,
        url: str,
        connections: int,
        content_type: str = "image/jpeg",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        del connections  # as many as callers in flight: a closed idle one is reopened
        parts = urllib.parse.urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.head = request_head(f"{self.host}:{self.port}", parts.path, content_type, headers)
        self.idle: list[Connection] = []

    async def _exchange(self, conn: Connection, body: bytes) -> tuple[int, dict[str, str], bool]:
        reader, writer = conn
        writer.write((self.head + content_length(len(body))).encode() + body)
        await writer.drain()
        version, status, headers = await read_response(reader)
        connection = headers.get("connection", "").lower()
        keep = connection != "close" and (version == "HTTP/1.1" or connection == "keep-alive")
        return status, headers, keep

    async def post(self, body: bytes, since: float) -> Outcome:
        late_ms = (time.perf_counter() - since) * 1000
        # A reused connection may have been closed by the server while idle: retry once, fresh.
        for attempt in range(2):
            reused = bool(self.idle) and attempt == 0
            conn = self.idle.pop() if reused else None
            try:
                # Bounded, as httpx's client is: a lost answer is recorded, never waited for.
                async with asyncio.timeout(ANSWER_TIMEOUT_S):
                    conn = conn or await asyncio.open_connection(self.host, self.port)
                    status, headers, keep = await self._exchange(conn, body)
            except TimeoutError:  # an OSError, but not one a fresh connection would cure
                if conn is not None:
                    conn[1].close()
                return Outcome.since(since, "NoAnswer", sent_late_ms=late_ms)
            except (OSError, asyncio.IncompleteReadError, ValueError, KeyError) as exc:
                if conn is not None:
                    conn[1].close()
                if reused:
                    continue
                return Outcome.since(since, type(exc).__name__, sent_late_ms=late_ms)
            outcome = Outcome.since(
                since, status, headers.get("server-timing"), sent_late_ms=late_ms
            )
            if keep:
                self.idle.append(conn)
            else:
                conn[1].close()
            return outcome
        raise AssertionError("unreachable: the second attempt always returns")

    async def aclose(self) -> None:
        for _, writer in self.idle:
            writer.close()


class HttpxSender:
    """The issue's client: httpx.AsyncClient, HTTP/1.1 keep-alive, one pool of connections."""

    about = "httpx.AsyncClient, HTTP/1.1 keep-alive"

    def __init__(self, url: str, connections: int, content_type: str = "image/jpeg") -> None:
        self.url = url
        self.headers = {"content-type": content_type}
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        self.client = httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(ANSWER_TIMEOUT_S))

    async def post(self, body: bytes, since: float) -> Outcome:
        try:  # reads the whole body
            response = await self.client.post(self.url, content=body, headers=self.headers)
        except httpx.HTTPError as exc:
            return Outcome.since(since, type(exc).__name__)
        return Outcome.since(since, response.status_code, response.headers.get("server-timing"))

    async def aclose(self) -> None:
        await self.client.aclose()


SENDERS: dict[str, type[HttpxSender | RawSender]] = {"httpx": HttpxSender, "raw": RawSender}


async def exchange_once(
    url: str,
    pieces: Sequence[bytes],
    pause_s: float = 0.0,
    length: int = -1,
    hang_up: bool = False,
) -> str:
    """One request on a fresh connection (``Connection: close``): ``pieces`` sent with a pause
    after each, under a Content-Length of ``length`` (default: theirs); the answer's status,
    'gone' if we ``hang_up`` instead of reading it, or the error's name."""
    parts = urllib.parse.urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    body_length = sum(map(len, pieces)) if length < 0 else length
    head = request_head(host, parts.path, "image/jpeg", close=True) + content_length(body_length)
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError as exc:
        return type(exc).__name__
    try:
        writer.write(head.encode())
        for piece in pieces:
            writer.write(piece)
            await writer.drain()
            if pause_s:
                await asyncio.sleep(pause_s)
        if hang_up:
            return "gone"
        status_line = await reader.readline()
        return status_line.split(b" ")[1].decode() if status_line else "closed"
    except (OSError, IndexError) as exc:
        return type(exc).__name__
    finally:
        writer.close()
