"""A small real HTTP/1.1 server on a loopback port for the load generators' tests
(tests/bench/test_nativegen.py, tests/bench/test_rawsender.py): one behaviour per path, so each
test can tell what a generator does when a server answers, refuses mid-upload, closes, lies or
never answers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field


@dataclass
class Server:
    port: int
    connections: int = 0
    bodies: list[int] = field(default_factory=list)  # body sizes received, in order
    open_now: int = 0
    most_open: int = 0  # connections open at once, at most


async def _respond(
    server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    server.connections += 1
    server.open_now += 1
    server.most_open = max(server.most_open, server.open_now)
    try:
        while True:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            path = head.split(" ", 2)[1]
            length = next(
                int(line.split(":", 1)[1])
                for line in head.split("\r\n")
                if line.lower().startswith("content-length:")
            )
            if path == "/refuse":  # answered from the head, the upload read afterwards
                writer.write(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 2\r\n\r\nno")
                server.bodies.append(len(await reader.readexactly(length)))
                continue
            server.bodies.append(len(await reader.readexactly(length)))
            if path == "/ok":
                writer.write(
                    b"HTTP/1.1 200 OK\r\nServer-Timing: decode;dur=0.40, total;dur=1.50\r\n"
                    b"Content-Length: 4\r\n\r\nfine"
                )
            elif path == "/close":  # says so, then closes
                writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0\r\n\r\n")
                await writer.drain()
                return
            elif path == "/vanish":  # closes without saying so: the client's next write fails
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                await writer.drain()
                return
            elif path == "/never":  # never answers; waits for the client to give up
                await reader.read()
                return
            elif path == "/slow":
                await asyncio.sleep(0.5)
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
            else:
                writer.write(b"NOT HTTP AT ALL\r\n\r\n")
                await writer.drain()
                return
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        server.open_now -= 1
        writer.close()


@contextlib.asynccontextmanager
async def serving() -> AsyncIterator[Server]:
    server = Server(0)
    listener = await asyncio.start_server(
        lambda r, w: _respond(server, r, w), "127.0.0.1", 0, backlog=512
    )
    server.port = listener.sockets[0].getsockname()[1]
    async with listener:
        yield server
