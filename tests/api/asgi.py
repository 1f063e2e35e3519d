"""Driving the app with hand-made ASGI messages, for what an HTTP client library hides: a body
arriving in chunks, and a client that disconnects while its request waits."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from starlette.types import ASGIApp, Message


@dataclass
class ScriptedClient:
    """Sends ``chunks`` as the body, then disconnects when ``disconnect`` is set. With
    ``stall_after``, a slow upload: that many chunks, then the rest once ``resume`` is set."""

    chunks: Sequence[bytes]
    disconnect: asyncio.Event = field(default_factory=asyncio.Event)
    chunks_read: int = 0
    sent: list[Message] = field(default_factory=list)
    stall_after: int | None = None
    resume: asyncio.Event = field(default_factory=asyncio.Event)
    stalled: asyncio.Event = field(default_factory=asyncio.Event)

    async def receive(self) -> Message:
        if self.chunks_read == self.stall_after:
            self.stalled.set()
            await self.resume.wait()
        if self.chunks_read < len(self.chunks):
            self.chunks_read += 1
            more = self.chunks_read < len(self.chunks)
            return {"type": "http.request", "body": self.chunks[self.chunks_read - 1],
                    "more_body": more}  # fmt: skip
        await self.disconnect.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        self.sent.append(message)

    @property
    def status(self) -> int | None:
        starts = [m for m in self.sent if m["type"] == "http.response.start"]
        return starts[0]["status"] if starts else None

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.sent if m["type"] == "http.response.body")


def http_scope(path: str, headers: dict[str, str], method: str = "POST") -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }


async def call(app: ASGIApp, scope: dict[str, Any], client: ScriptedClient) -> None:
    await app(scope, client.receive, client.send)
